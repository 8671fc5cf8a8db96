"""Feature extraction, once per content key, with an on-disk store."""

from overspec.features._files import row_blocks
from overspec.features.store import FeatureStore, Features

__all__ = ["FeatureStore", "Features", "row_blocks"]
