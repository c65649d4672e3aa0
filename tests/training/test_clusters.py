"""Pseudo-classes from the images alone: k-means finds well-separated groups, the same seed the same clusters;
a cdcgan run on them never reads the labels and is published unconditionally, drawing each cluster as often
as it holds images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from genserve.store import SIGNATURE_NAME, read_metadata
from training.cdcgan import class_from_latent
from training.clusters import pseudo_classes, refine_clusters
from training.config import TrainConfig
from training.datasets import ImageDataset
from training.distribute import make_placement
from training.export import export_checkpoint
from training.reclustering import read_pseudo_classes
from training.train import _training_classes, train


def _blobs(sizes: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 8x8 images around one random prototype per group, `sizes[g]` of group g."""
    rng = np.random.default_rng(seed)
    prototypes = rng.uniform(-1, 1, (len(sizes), 8, 8, 1))
    groups = np.repeat(np.arange(len(sizes)), sizes)
    images = prototypes[groups] + 0.1 * rng.standard_normal((len(groups), 8, 8, 1))
    return images.astype(np.float32), groups


def test_clusters_recover_well_separated_groups_and_their_shares() -> None:
    images, groups = _blobs((300, 100, 200))

    found = pseudo_classes(images, 3, seed=0)

    assert found.labels.dtype == np.int32 and found.count == 3
    # Each group falls in one cluster of its own (whatever the clusters' order).
    assert all(len(set(found.labels[groups == g])) == 1 for g in range(3))
    assert len({found.labels[groups == g][0] for g in range(3)}) == 3
    np.testing.assert_allclose(sorted(found.weights), [1 / 6, 1 / 3, 1 / 2])
    assert found.names == ["cluster 0", "cluster 1", "cluster 2"]
    np.testing.assert_array_equal(pseudo_classes(images, 3, seed=0).labels, found.labels)


def test_too_few_images_or_clusters_are_refused() -> None:
    images, _ = _blobs((3, 2))
    with pytest.raises(ValueError, match="at least 2 clusters"):
        pseudo_classes(images, 1, seed=0)
    with pytest.raises(ValueError, match="too few for 4 clusters"):
        pseudo_classes(images, 4, seed=0)


def test_the_training_classes_replace_the_labels_only_when_asked(tmp_path: Path) -> None:
    images, groups = _blobs((40, 40))
    labelled = ImageDataset("blobs", images, groups.astype(np.int64), ["a", "b"])
    config = TrainConfig(model="cdcgan", dataset="shapes", name="blobs", pseudo_classes=2)
    placement = make_placement("none")

    relabelled, pseudo = _training_classes(config, labelled, tmp_path, placement)
    plain = TrainConfig(model="cdcgan", dataset="shapes", name="blobs")
    unchanged, none = _training_classes(plain, labelled, tmp_path, placement)

    assert pseudo is not None and relabelled.class_names == ["cluster 0", "cluster 1"]
    assert pseudo.weights() == [0.5, 0.5] and relabelled.labels is not None
    np.testing.assert_array_equal(relabelled.labels, pseudo.labels)
    assert relabelled.images is images and unchanged is labelled and none is None


def test_refined_clusters_follow_the_features_and_keep_their_numbers() -> None:
    images, groups = _blobs((60, 60, 60))
    features = images.reshape(len(images), -1)
    # The pixel clusters with a fifth of the images put in the wrong cluster, and cluster numbers shuffled.
    rng = np.random.default_rng(0)
    start = (groups + 1) % 3
    wrong = rng.permutation(len(start))[: len(start) // 5]
    start[wrong] = (start[wrong] + 1) % 3

    refined = refine_clusters(features, start, 3, seed=0)

    np.testing.assert_array_equal(
        refined.labels, (groups + 1) % 3
    )  # each group stays the number most of it had
    np.testing.assert_allclose(refined.weights, [1 / 3] * 3)
    with pytest.raises(ValueError, match="feature rows"):
        refine_clusters(features[:5], start, 3, seed=0)


def test_reclustering_needs_pseudo_classes_and_a_projection_discriminator() -> None:
    with pytest.raises(ValueError, match="needs pseudo_classes"):
        TrainConfig(model="cdcgan", dataset="shapes", name="x", recluster_every=2)
    with pytest.raises(ValueError, match="projection"):
        TrainConfig(
            model="cdcgan",
            dataset="shapes",
            name="x",
            pseudo_classes=2,
            recluster_every=2,
            conditioning="concat",
        )


def test_pseudo_classes_need_a_conditional_model_and_two_clusters() -> None:
    with pytest.raises(ValueError, match="pseudo_classes takes a conditional model"):
        TrainConfig(model="dcgan", dataset="shapes", name="x", pseudo_classes=4)
    with pytest.raises(ValueError, match="at least 2"):
        TrainConfig(model="cdcgan", dataset="shapes", name="x", pseudo_classes=1)


def test_weighted_classes_are_drawn_as_often_as_their_weights_from_standard_normal_latents() -> None:
    z = np.random.RandomState(0).randn(60_000, 4).astype(np.float32)
    weights = [0.5, 0.2, 0.3]

    latents, labels = (tensor.numpy() for tensor in class_from_latent(z, 3, weights))

    np.testing.assert_allclose(np.bincount(labels, minlength=3) / len(labels), weights, atol=0.01)
    for label in range(3):
        redrawn = latents[labels == label, 0]
        assert abs(redrawn.mean()) < 0.03 and abs(redrawn.std() - 1.0) < 0.03
    np.testing.assert_array_equal(latents[:, 1:], z[:, 1:])
    uniform = class_from_latent(z, 3, [1.0, 1.0, 1.0])[1].numpy()
    assert (uniform == class_from_latent(z, 3)[1].numpy()).mean() > 0.999


@pytest.mark.parametrize("recluster_every", [0, 1])
def test_a_pseudo_class_run_is_published_unconditionally_and_says_no_labels_were_used(
    tmp_path: Path, recluster_every: int
) -> None:
    config = TrainConfig(
        model="cdcgan",
        dataset="shapes",
        name="shapes-unlabelled",
        store=tmp_path / "store",
        run_dir=tmp_path / "run",
        batch_size=32,
        limit=64,
        latent_dim=8,
        sample_grid=4,
        pseudo_classes=2,
        recluster_every=recluster_every,
        epochs=2,
    )

    result = train(config)

    assert result.version_dir is not None
    metadata = read_metadata(result.version_dir)
    assert metadata.kind == "dcgan" and not metadata.conditional and metadata.class_names is None
    assert metadata.training_config["labels_used"] is False
    assert metadata.training_config["pseudo_classes"] == 2
    weights = metadata.training_config["class_weights"]
    assert len(weights) == 2 and sum(weights) == pytest.approx(1.0, abs=1e-5)
    kept = read_pseudo_classes(tmp_path / "run", 2)
    if recluster_every:  # the classes it trained on last, kept for a resume, are what it draws
        assert kept is not None and len(kept.labels) == 64
        np.testing.assert_allclose(weights, kept.weights, atol=1e-6)
        history = json.loads((tmp_path / "run" / "history.json").read_text())["epochs"]
        assert all(0.0 <= epoch["pseudo_classes_moved"] <= 1.0 for epoch in history)
        again = export_checkpoint(tmp_path / "run", tmp_path / "again")
        assert read_metadata(again).training_config["class_weights"] == weights
    else:
        assert kept is None
    serve = tf.saved_model.load(str(result.version_dir)).signatures[SIGNATURE_NAME]
    images = next(iter(serve(z=tf.random.normal([3, 8])).values())).numpy()
    assert images.shape == (3, 28, 28, 3) and images.dtype == np.uint8
