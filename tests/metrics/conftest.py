"""Shared score sets for the metric tests: reference §10 vectors of biometric-protocols.md."""

import numpy as np
import pytest
from sklearn.datasets import load_iris


@pytest.fixture(scope="session")
def iris_sets() -> dict[str, np.ndarray]:
    """bob.measure's Iris score sets (§10.1), generated from scikit-learn's copy of the data."""
    features, target = load_iris(return_X_y=True)
    return {
        "linsep_neg": features[target == 0, 2],
        "linsep_pos": features[target == 2, 2],
        "nonsep_neg": features[target == 0, 0],
        "nonsep_pos": features[target == 1, 0],
    }


@pytest.fixture(scope="session")
def pad30() -> dict[str, list]:
    """The 30-score PAD / MAD example of §10.5 (higher = bona fide)."""
    printed = [0.1, 0.2, 0.3, 0.35, 0.45, 0.5, 0.62, 0.05, 0.15, 0.25]
    replay = [0.3, 0.4, 0.52, 0.58, 0.66, 0.72, 0.2, 0.1, 0.33, 0.44]
    return {
        "bona_fide": [0.9, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4],
        "attack": printed + replay,
        "species": ["print"] * 10 + ["replay"] * 10,
    }
