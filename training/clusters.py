"""Pseudo-classes for images without labels: k-means clusters of their principal components.

A conditional GAN trained on unlabelled images with these clusters as its classes gets what a labelled run gets
from its labels: a hint of which mode to draw, so the generator covers every cluster instead of collapsing onto
a few. The clusters are first found before training, from the images alone (never from a dataset's labels):
the pixels are centred and projected on their leading principal components (fitted on a sample; not whitened,
which would weigh the faint components, mostly noise, as much as the strong ones), and k-means (k-means++
seeding, Lloyd iterations, the best of a few restarts) groups them. The same images and seed give the same
clusters.

Pixels are a poor measure of what makes two images alike; a discriminator learns a better one as it trains. With
`refine_clusters` a run can find its clusters again in the discriminator's features every few epochs (the
self-conditioned GAN of Liu et al., "Diverse Image Generation via Self-Conditioned GANs", CVPR 2020): Lloyd's
iterations start from the centres the current clusters have in the new features, so cluster i stays cluster i
(the class the generator has learned to draw for it) while its members move to where the features say they
belong.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

# Principal components kept: on 28x28 digits and clothes they hold about 80-85% of the pixel variance.
COMPONENTS = 48
# Images the components and the clusters' centres are fitted on; every image is then assigned.
FIT_SAMPLE = 20_000
RESTARTS = 3
MAX_ITERATIONS = 50
_CHUNK = 8192  # rows whose distances to the centres are computed at once


@dataclass(frozen=True)
class PseudoClasses:
    """Each image's cluster and the share of the images in each cluster (the classes' weights)."""

    labels: np.ndarray  # int32 [N]
    weights: np.ndarray  # float64 [K], summing to 1

    @property
    def count(self) -> int:
        return int(self.weights.shape[0])

    @property
    def names(self) -> list[str]:
        return [f"cluster {i}" for i in range(self.count)]


def pseudo_classes(images: np.ndarray, clusters: int, seed: int) -> PseudoClasses:
    """`clusters` k-means clusters of `images` ([N, H, W, C], any float range), every one non-empty."""
    if clusters < 2:
        raise ValueError(f"pseudo-classes need at least 2 clusters, got {clusters}")
    if len(images) < clusters * 2:
        raise ValueError(f"{len(images)} images are too few for {clusters} clusters: use fewer clusters")
    rng = np.random.default_rng(seed)
    rows = images.reshape(len(images), -1).astype(np.float32)
    sample = rows[rng.permutation(len(rows))[:FIT_SAMPLE]]
    project = _projection(sample, min(COMPONENTS, sample.shape[1], len(sample) - 1))
    fitted = project(sample)
    best_centres, best_inertia = None, np.inf
    for _ in range(RESTARTS):
        centres, inertia = _kmeans(fitted, clusters, rng)
        if inertia < best_inertia:
            best_centres, best_inertia = centres, inertia
    assert best_centres is not None
    labels = _assign(project(rows), best_centres)
    counts = np.bincount(labels, minlength=clusters)
    if (counts == 0).any():
        raise ValueError(f"{int((counts == 0).sum())} of {clusters} clusters are empty: use fewer clusters")
    logger.info(
        "%d pseudo-classes of %d images: the largest holds %.1f%%, the smallest %.1f%%",
        clusters,
        len(rows),
        100 * counts.max() / len(rows),
        100 * counts.min() / len(rows),
    )
    return PseudoClasses(labels.astype(np.int32), counts / counts.sum())


def refine_clusters(features: np.ndarray, labels: np.ndarray, clusters: int, seed: int) -> PseudoClasses:
    """The clusters `labels` ([N] in [0, clusters)) become in `features` ([N, D]): Lloyd's iterations on the
    features' leading principal components, from the centres the current clusters have there, every cluster
    kept non-empty."""
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"{features.shape[0]} feature rows for {labels.shape[0]} labels")
    rng = np.random.default_rng(seed)
    rows = features.reshape(len(features), -1).astype(np.float32)
    sample = rows[rng.permutation(len(rows))[:FIT_SAMPLE]]
    points = _projection(sample, min(COMPONENTS, sample.shape[1], len(sample) - 1))(rows)
    centres = np.stack(
        [
            points[labels == cluster].mean(axis=0)
            if np.any(labels == cluster)
            else points[rng.integers(len(points))]
            for cluster in range(clusters)
        ]
    ).astype(np.float32)
    centres, _ = _lloyd(points, centres)
    refined = _assign(points, centres)
    counts = np.bincount(refined, minlength=clusters)
    if (counts == 0).any():
        logger.info("refining the pseudo-classes would empty a cluster: they stay as they were")
        kept = np.bincount(labels, minlength=clusters)
        return PseudoClasses(labels.astype(np.int32), kept / kept.sum())
    moved = float(np.mean(refined != labels))
    logger.info(
        "pseudo-classes found again in the discriminator's features: %.1f%% of the images moved; the largest "
        "holds %.1f%%, the smallest %.1f%%",
        100 * moved,
        100 * counts.max() / len(rows),
        100 * counts.min() / len(rows),
    )
    return PseudoClasses(refined.astype(np.int32), counts / counts.sum())


def _projection(sample: np.ndarray, components: int) -> Callable[[np.ndarray], np.ndarray]:
    """The map from rows to their leading principal components, fitted on `sample`."""
    mean = sample.mean(axis=0)
    _, _, basis = np.linalg.svd(sample - mean, full_matrices=False)
    axes = basis[:components].T

    def project(rows: np.ndarray) -> np.ndarray:
        return np.asarray((rows - mean) @ axes, dtype=np.float32)

    return project


def _assign(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Each point's nearest centre, in chunks so the distance matrix stays small."""
    labels = np.empty(len(points), dtype=np.int64)
    squared = (centres**2).sum(axis=1)
    for start in range(0, len(points), _CHUNK):
        chunk = points[start : start + _CHUNK]
        labels[start : start + _CHUNK] = np.argmin(squared - 2.0 * chunk @ centres.T, axis=1)
    return labels


def _kmeans(points: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Centres by k-means++ seeding and Lloyd iterations; also the summed squared distance to them."""
    return _lloyd(points, _seed_centres(points, k, rng))


def _lloyd(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, float]:
    """Lloyd's iterations from `centres` (changed in place) until no point changes cluster; also the inertia."""
    k = len(centres)
    labels = _assign(points, centres)
    for _ in range(MAX_ITERATIONS):
        for cluster in range(k):
            members = points[labels == cluster]
            # An emptied cluster restarts at the point farthest from its centre.
            if len(members):
                centres[cluster] = members.mean(axis=0)
            else:
                far = ((points - centres[labels]) ** 2).sum(axis=1).argmax()
                centres[cluster] = points[far]
        updated = _assign(points, centres)
        if np.array_equal(updated, labels):
            break
        labels = updated
    inertia = float(((points - centres[labels]) ** 2).sum())
    return centres, inertia


def _seed_centres(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++: each next centre drawn with probability proportional to its squared distance to the nearest."""
    centres = np.empty((k, points.shape[1]), dtype=np.float32)
    centres[0] = points[rng.integers(len(points))]
    nearest = ((points - centres[0]) ** 2).sum(axis=1)
    for i in range(1, k):
        centres[i] = points[rng.choice(len(points), p=nearest / nearest.sum())]
        nearest = np.minimum(nearest, ((points - centres[i]) ** 2).sum(axis=1))
    return centres
