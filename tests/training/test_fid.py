"""The Fréchet distance and Inception Score on features and probabilities with known answers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from training.fid import feature_frechet_distance, frechet_distance, gaussian_fit, inception_score


def test_frechet_distance_of_identical_features_is_zero() -> None:
    features = np.random.RandomState(0).normal(size=(500, 16))

    assert feature_frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_of_shifted_features_is_squared_shift() -> None:
    features = np.random.RandomState(1).normal(size=(400, 6))
    shift = np.array([3.0, 0.0, 4.0, 0.0, 0.0, 0.0])

    assert feature_frechet_distance(features, features + shift) == pytest.approx(25.0, rel=1e-6)


def test_frechet_distance_matches_closed_form_for_commuting_covariances() -> None:
    # For diagonal covariances the trace term is sum((sqrt(a) - sqrt(b))^2) = (1-3)^2 + (2-1)^2 = 5;
    # rotating both by the same orthogonal matrix must not change it.
    rotation, _ = np.linalg.qr(np.random.RandomState(2).normal(size=(2, 2)))
    first = rotation @ np.diag([1.0, 4.0]) @ rotation.T
    second = rotation @ np.diag([9.0, 1.0]) @ rotation.T
    mean = np.zeros(2)

    assert frechet_distance(mean, first, mean, second) == pytest.approx(5.0, rel=1e-9)
    assert frechet_distance(mean, first, mean + [1.0, 1.0], second) == pytest.approx(7.0, rel=1e-9)


def test_gaussian_fit_needs_two_samples() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_fit(np.zeros((1, 3)))


def test_inception_score_of_confident_uniform_predictions_is_the_class_count() -> None:
    one_hot = np.tile(np.eye(7), (3, 1))

    assert inception_score(one_hot) == pytest.approx(7.0, rel=1e-6)


def test_inception_score_of_a_single_predicted_class_is_one() -> None:
    same = np.tile([[0.0, 1.0, 0.0]], (10, 1))

    assert inception_score(same) == pytest.approx(1.0, rel=1e-6)


def test_statistics_import_without_tensorflow() -> None:
    probe = "import sys, training.fid; print(sorted({'tensorflow', 'keras'} & set(sys.modules)))"
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"
