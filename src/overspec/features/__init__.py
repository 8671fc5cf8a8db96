"""Feature extraction, once per content key, with an on-disk store."""

from overspec.features.store import FeatureStore, Features

__all__ = ["FeatureStore", "Features"]
