"""The embedded corpus: English-like sentences from a small grammar with known factors.

Why our own generator: the demo and the tests need a corpus that ships with the code,
has no licence strings attached, trains in minutes on a CPU and, unlike real text, comes
with the *generative factors* of every sentence, so a latent space can be checked for
what it encodes (tense, negation, number, ...). Every sentence is rendered from a factor
dict by :func:`render`, and each split's factors are written next to it as JSON lines;
:func:`parse` inverts :func:`render`, so a *decoded* sentence's factors can be read back
(how the latent-edit measurements tell whether an edit did what it should).

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
from textvae.data.reading import read_json_lines
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


# word -> (lemma, number) for every noun form, and -> (lemma, tense, number) for every finite
# verb form a sentence can start its verb phrase with; the tables :func:`parse` reads with.
_NOUN_FORMS = {form: (lemma, number) for table in (ANIMATE, THINGS) for lemma, plural in table.items()
               for form, number in ((lemma, "singular"), (plural, "plural"))}
_FINITE_VERBS = {form: (lemma, tense, number) for lemma, (third, past) in VERBS.items()
                 for form, tense, number in ((third, "present", "singular"), (lemma, "present", "plural"),
                                             (past, "past", None))}


def parse(sentence: str) -> dict[str, Any] | None:
    """The factor dict :func:`render` makes ``sentence`` from, or None outside the grammar.

    Words are read left to right into factors, which are then rendered again: only a
    sentence that renders back word for word is accepted, so agreement (``the dogs sees``),
    determiners (``an cat``) and word order are all checked by :func:`render` itself.
    Whitespace between words does not matter.
    """
    words = sentence.split()
    f: dict[str, Any] = {}
    try:
        i = _parse_subject(words, f)
        i = _parse_verb(words, i, f)
        i = _parse_object(words, i, f)
        i = _parse_extension(words, i, f)
    except (IndexError, KeyError):
        return None
    if words[i:] != ["."] or render(f).split() != words:
        return None
    return f


def _parse_subject(words: list[str], f: dict[str, Any]) -> int:
    if words[0] in PRONOUNS:
        f.update(subject=words[0], subject_adjective=None, subject_number=PRONOUNS[words[0]])
        return 1
    if words[0] != "the":
        raise KeyError(words[0])
    adjective, (noun, number), i = _adjective_and_noun(words, 1)
    if noun not in ANIMATE:
        raise KeyError(noun)
    f.update(subject=noun, subject_adjective=adjective, subject_number=number)
    return i


def _adjective_and_noun(words: list[str], i: int) -> tuple[str | None, tuple[str, str], int]:
    adjective = words[i] if words[i] in ADJECTIVES else None
    i += adjective is not None
    return adjective, _NOUN_FORMS[words[i]], i + 1


def _parse_verb(words: list[str], i: int, f: dict[str, Any]) -> int:
    """Fills verb, tense and negation; the number the verb agrees with is left to :func:`render`'s check."""
    auxiliary = {"will": "future", "did": "past", "does": "present", "do": "present"}.get(words[i])
    if auxiliary is None:
        verb, tense, _ = _FINITE_VERBS[words[i]]
        f.update(verb=verb, tense=tense, negation=False)
        return i + 1
    negation = words[i + 1] == "not"
    verb = words[i + 1 + negation]
    if verb not in VERBS:
        raise KeyError(verb)
    f.update(verb=verb, tense=auxiliary, negation=negation)
    return i + 2 + negation


def _parse_object(words: list[str], i: int, f: dict[str, Any]) -> int:
    if words[i] not in ("a", "an", "the"):
        raise KeyError(words[i])
    adjective, (noun, number), i = _adjective_and_noun(words, i + 1)
    f.update(object=noun, object_adjective=adjective, object_number=number)
    return i


def _parse_extension(words: list[str], i: int, f: dict[str, Any]) -> int:
    """Fills extension, then its words, in :func:`sample_factors`' key order."""
    extra: dict[str, str] = {}
    if words[i] in PREPOSITIONS and words[i + 1] == "the" and words[i + 2] in PLACES:
        extra.update(preposition=words[i], place=words[i + 2])
        i += 3
    if words[i] in ADVERBS:
        extra["adverb"] = words[i]
        i += 1
    f["extension"] = "+".join(part for part, key in (("pp", "place"), ("adverb", "adverb")) if key in extra) or "none"
    f.update(extra)
    return i


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
    if not path.is_file():
        raise TextVAEError(f"{path}: no such file (factors exist only for the synthetic corpus)")
    return [row for _, row in read_json_lines(path)]
