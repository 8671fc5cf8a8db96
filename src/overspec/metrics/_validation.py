"""Boundary checks shared by every public metric: validate once, then work on clean float arrays."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike
from overspec.errors import InputError


def as_scores(values: ArrayLike, name: str, *, keep_float32: bool = False) -> np.ndarray:
    """Return ``values`` as a non-empty, finite, one-dimensional float64 array, or raise naming ``name``.

    With ``keep_float32`` a float32 array is checked and returned as float32 (for rules that only compare and count
    scores, where widening changes nothing but the memory).
    """
    array = np.asarray(values)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
    if np.iscomplexobj(array):
        raise TypeError(f"{name} must hold real numbers, got complex values")
    array = np.asarray(array, dtype=np.float32 if keep_float32 and array.dtype == np.float32 else np.float64)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise InputError(f"{name} must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise InputError(f"{name} is empty: at least one score is needed")
    bad = ~np.isfinite(array)
    if bad.any():
        raise InputError(f"{name} contains NaN or infinite values ({int(bad.sum())} of {array.size})")
    return array


def as_rates(values: ArrayLike, name: str) -> np.ndarray:
    """Return target rates as a finite float64 array with every entry in [0, 1], or raise naming ``name``."""
    array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if array.ndim != 1 or array.size == 0:
        raise InputError(f"{name} must be a rate or a non-empty 1-D sequence of rates, got shape {array.shape}")
    if not np.all(np.isfinite(array)) or np.any((array < 0) | (array > 1)):
        raise InputError(f"{name} must lie in [0, 1], got {array.tolist()}")
    return array


def as_thresholds(values: ArrayLike, name: str = "threshold") -> np.ndarray:
    """Return thresholds as a non-NaN 1-D float64 array (infinite thresholds are allowed)."""
    array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if array.ndim != 1 or array.size == 0:
        raise InputError(f"{name} must be a number or a non-empty 1-D sequence, got shape {array.shape}")
    if np.isnan(array).any():
        raise InputError(f"{name} contains NaN")
    return array


def check_choice(value: str, name: str, allowed: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``allowed``; otherwise raise a message listing the accepted values."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise InputError(f"{name}={value!r} is not one of {', '.join(repr(a) for a in allowed)}")
    return value


def is_scalar(value: ArrayLike) -> bool:
    """Return True when ``value`` is a single number (results are then returned as floats, not arrays)."""
    return np.ndim(value) == 0
