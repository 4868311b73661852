"""The embedded corpus: English-like sentences from a small grammar with known factors.

Why our own generator: the demo and the tests need a corpus that ships with the code,
has no licence strings attached, trains in minutes on a CPU and, unlike real text, comes
with the *generative factors* of every sentence, so a latent space can be checked for
what it encodes (tense, negation, number, ...). Every sentence is rendered from a factor
dict by :func:`render`, and each split's factors are written next to it as JSON lines.

Factors (keys of each dict): ``subject`` (a noun lemma or a pronoun), ``subject_adjective``
(or ``None``), ``subject_number``, ``verb`` (lemma), ``tense`` (past/present/future),
``negation``, ``object``, ``object_adjective`` (or ``None``), ``object_number`` and
``extension`` (none/pp/adverb/pp+adverb: the length factor), plus ``place``/``preposition``
/``adverb`` when the extension uses them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from textvae.atomic import ensure_directory, write_text
from textvae.errors import TextVAEError

# noun -> plural
ANIMATE = {
    "dog": "dogs", "cat": "cats", "bird": "birds", "fox": "foxes", "horse": "horses",
    "child": "children", "man": "men", "woman": "women", "boy": "boys", "girl": "girls",
    "teacher": "teachers", "farmer": "farmers", "doctor": "doctors", "baby": "babies",
    "mouse": "mice", "king": "kings",
}
THINGS = {
    "box": "boxes", "ball": "balls", "book": "books", "apple": "apples", "cup": "cups",
    "hat": "hats", "key": "keys", "letter": "letters", "car": "cars", "chair": "chairs",
    "flower": "flowers", "coin": "coins",
}
# pronoun -> grammatical number
PRONOUNS = {"he": "singular", "she": "singular", "it": "singular", "we": "plural", "they": "plural"}
ADJECTIVES = (
    "old", "small", "red", "big", "young", "happy", "little", "green", "blue", "tall",
    "quiet", "angry", "lazy", "brown", "black", "white", "new", "heavy",
)
# lemma -> (third person singular present, past)
VERBS = {
    "see": ("sees", "saw"), "find": ("finds", "found"), "like": ("likes", "liked"),
    "chase": ("chases", "chased"), "help": ("helps", "helped"), "watch": ("watches", "watched"),
    "follow": ("follows", "followed"), "carry": ("carries", "carried"), "hold": ("holds", "held"),
    "meet": ("meets", "met"), "take": ("takes", "took"), "want": ("wants", "wanted"),
    "push": ("pushes", "pushed"), "draw": ("draws", "drew"), "keep": ("keeps", "kept"),
    "hear": ("hears", "heard"), "bring": ("brings", "brought"), "visit": ("visits", "visited"),
    "love": ("loves", "loved"), "lose": ("loses", "lost"),
}
PREPOSITIONS = ("in", "near", "under", "behind", "by", "at")
PLACES = ("park", "garden", "house", "river", "kitchen", "street", "school", "forest", "market", "station")
ADVERBS = ("quickly", "slowly", "again", "carefully", "happily", "suddenly", "today", "often")
TENSES = ("past", "present", "future")
NUMBERS = ("singular", "plural")
EXTENSIONS = ("none", "pp", "adverb", "pp+adverb")


def vocabulary() -> set[str]:
    """Every word :func:`render` can produce (the corpus is whitespace-tokenised)."""
    words = {"the", "a", "an", "not", "did", "does", "do", "will", "."}
    for table in (ANIMATE, THINGS):
        words |= set(table) | set(table.values())
    for lemma, forms in VERBS.items():
        words |= {lemma, *forms}
    return words | set(PRONOUNS) | set(ADJECTIVES) | set(PREPOSITIONS) | set(PLACES) | set(ADVERBS)


def _noun_phrase(noun: str, adjective: str | None, number: str, definite: bool) -> list[str]:
    words = ([adjective] if adjective else []) + [noun if number == "singular" else {**ANIMATE, **THINGS}[noun]]
    if definite or number == "plural":
        return ["the", *words]
    return ["an" if words[0][0] in "aeiou" else "a", *words]


def _verb_phrase(verb: str, tense: str, negation: bool, number: str) -> list[str]:
    third, past = VERBS[verb]
    if tense == "future":
        return ["will", "not", verb] if negation else ["will", verb]
    if tense == "past":
        return ["did", "not", verb] if negation else [past]
    if negation:
        return ["does" if number == "singular" else "do", "not", verb]
    return [third if number == "singular" else verb]


def render(f: dict[str, Any]) -> str:
    """The sentence for one factor dict, e.g. ``the old dog saw a small cat .``.

    Subjects take ``the``; singular objects ``a``/``an`` and plural objects ``the``, so the
    determiners carry no information beyond the number factors.
    """
    if f["subject"] in PRONOUNS:
        subject = [f["subject"]]
    else:
        subject = _noun_phrase(f["subject"], f["subject_adjective"], f["subject_number"], definite=True)
    words = subject + _verb_phrase(f["verb"], f["tense"], f["negation"], f["subject_number"])
    words += _noun_phrase(f["object"], f["object_adjective"], f["object_number"], definite=False)
    if "pp" in f["extension"]:
        words += [f["preposition"], "the", f["place"]]
    if "adverb" in f["extension"]:
        words.append(f["adverb"])
    return " ".join(words) + " ."


def sample_factors(rng: random.Random) -> dict[str, Any]:
    """Draw one sentence's factors (fixed key order, so the JSON lines are reproducible)."""
    if rng.random() < 0.2:
        subject = rng.choice(sorted(PRONOUNS))
        subject_adjective, subject_number = None, PRONOUNS[subject]
    else:
        subject = rng.choice(sorted(ANIMATE))
        subject_adjective = rng.choice(ADJECTIVES) if rng.random() < 0.5 else None
        subject_number = rng.choice(NUMBERS)
    obj = rng.choice(sorted(ANIMATE) + sorted(THINGS))
    f: dict[str, Any] = {
        "subject": subject,
        "subject_adjective": subject_adjective,
        "subject_number": subject_number,
        "verb": rng.choice(sorted(VERBS)),
        "tense": rng.choice(TENSES),
        "negation": rng.random() < 0.3,
        "object": obj,
        "object_adjective": rng.choice(ADJECTIVES) if rng.random() < 0.5 else None,
        "object_number": rng.choice(NUMBERS),
        "extension": rng.choice(EXTENSIONS),
    }
    if "pp" in f["extension"]:
        f["preposition"], f["place"] = rng.choice(PREPOSITIONS), rng.choice(PLACES)
    if "adverb" in f["extension"]:
        f["adverb"] = rng.choice(ADVERBS)
    return f


def generate(n: int, seed: int, split: str) -> Iterator[dict[str, Any]]:
    """``n`` factor dicts for ``split``; each split has its own stream, so changing
    ``n_train`` leaves the validation and test sentences as they were."""
    rng = random.Random(f"textvae-synthetic:{seed}:{split}")
    for _ in range(n):
        yield sample_factors(rng)


def write_corpus(out_dir: str | Path, n_train: int = 20000, n_valid: int = 1000, n_test: int = 10000,
                 seed: int = 0) -> Path:
    """Write ``{split}.txt`` and the aligned ``{split}.factors.jsonl`` for all three splits.

    The output depends only on the arguments (byte for byte), which is what lets the repo
    commit ``data/synthetic`` and a test check it is up to date.
    """
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    for split, n in sizes.items():
        if n < 1:
            raise TextVAEError(f"synthetic corpus: --{split} must be at least 1, got {n}")
    out = ensure_directory(out_dir, "corpus directory")
    for split, n in sizes.items():
        factors = list(generate(n, seed, split))
        write_text(out / f"{split}.txt", "".join(render(f) + "\n" for f in factors))
        write_text(out / f"{split}.factors.jsonl",
                      "".join(json.dumps(f, separators=(",", ":")) + "\n" for f in factors))
    return out


def factors_path(directory: str | Path, split: str) -> Path:
    return Path(directory) / f"{split}.factors.jsonl"


def load_factors(directory: str | Path, split: str) -> list[dict[str, Any]]:
    """The factor dicts of ``split``, one per sentence of ``{split}.txt``, in order."""
    path = factors_path(directory, split)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TextVAEError(f"{path}: no such file (factors exist only for the synthetic corpus)") from None
    rows = []
    for line_no, line in enumerate(text.splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise TextVAEError(f"{path}:{line_no}: not a JSON object ({exc.msg})") from None
    return rows
