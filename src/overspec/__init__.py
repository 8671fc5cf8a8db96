"""overspec: what did the specialisation cost? Evaluate foundation models and their biometric fine-tunes.

The public notebook API is re-exported lazily so that ``import overspec`` stays cheap.
"""

from __future__ import annotations

__all__ = ["linear_probe", "load_model", "__version__"]

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "linear_probe":
        from overspec.protocols.linear_probe import linear_probe

        return linear_probe
    if name == "load_model":
        from overspec.models import load_model

        return load_model
    raise AttributeError(f"module 'overspec' has no attribute {name!r}")
