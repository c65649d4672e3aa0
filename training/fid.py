"""Sample-quality statistics in NumPy: the Fréchet distance between feature sets and the Inception Score.

Both take the outputs of some classifier (features ``[N, D]``, class probabilities ``[N, K]``), so this
module needs no TensorFlow; `training.evaluate` supplies the classifier.
"""

from __future__ import annotations

import numpy as np

# Generated images scored per evaluation unless asked otherwise: the usual FID sample count. The distance
# is biased upwards at small counts, so only numbers at the same count compare.
DEFAULT_NUM_SAMPLES = 10_000
# Probabilities are clipped to this before taking logs, so a class given exactly 0 costs a finite amount.
_MIN_PROBABILITY = 1e-12


def frechet_distance(
    mean_a: np.ndarray, covariance_a: np.ndarray, mean_b: np.ndarray, covariance_b: np.ndarray
) -> float:
    """Fréchet distance between two Gaussians: |m_a - m_b|^2 + tr(C_a + C_b - 2 (C_a^½ C_b C_a^½)^½)."""
    root_a = _sqrt_psd(covariance_a)
    middle = root_a @ covariance_b @ root_a
    cross_trace = float(np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2.0), 0.0, None))))
    mean_term = float(np.sum((mean_a - mean_b) ** 2))
    distance = mean_term + float(np.trace(covariance_a) + np.trace(covariance_b)) - 2.0 * cross_trace
    return max(distance, 0.0)  # rounding can push identical fits a hair below zero


def gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of `features` [N, D]; needs N >= 2."""
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(
            f"need at least 2 feature vectors [N, D] to fit a Gaussian, got shape {features.shape}"
        )
    values = features.astype(np.float64)
    return values.mean(axis=0), np.cov(values, rowvar=False)


def feature_frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two feature sets."""
    return frechet_distance(*gaussian_fit(features_a), *gaussian_fit(features_b))


def inception_score(probabilities: np.ndarray) -> float:
    """exp(E_x[KL(p(y|x) || p(y))]) for class probabilities [N, K]; between 1 and K."""
    if probabilities.ndim != 2 or len(probabilities) == 0:
        raise ValueError(f"need class probabilities [N, K] with N >= 1, got shape {probabilities.shape}")
    conditional = np.clip(probabilities.astype(np.float64), _MIN_PROBABILITY, 1.0)
    marginal = conditional.mean(axis=0, keepdims=True)
    divergence = np.sum(conditional * (np.log(conditional) - np.log(marginal)), axis=1)
    return float(np.exp(np.mean(divergence)))


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix via its eigen-decomposition."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    roots = np.sqrt(np.clip(eigenvalues, 0.0, None))
    return (eigenvectors * roots) @ eigenvectors.T
