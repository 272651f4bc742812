"""Example sets for concept search: standard-library functions that call `re` against ones that never mention it,
and Shakespeare lines holding a joy word against lines with no word of joy at all."""

import ast
import json
import math
import random
import re
import sys
import sysconfig
import textwrap
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# The module-level functions of `re` that take a pattern; a call to one of them on the name `re` makes a positive.
RE_PATTERN_FUNCTIONS = frozenset({"compile", "match", "search", "sub", "findall", "fullmatch", "finditer", "split"})
# A negative may not mention `re.` anywhere, comments and strings included (nor `self.re.`, `sre.`: conservative).
RE_MENTION = re.compile(r"\bre\.")
# About 128 SmolLM2 tokens of Python; a function is cut at the last whole line that fits.
MAX_FUNCTION_CHARS = 600
# test_re.py alone holds a third of the standard library's calls to re.*; capping each file keeps the set varied.
MAX_POSITIVES_PER_FILE = 20

# Whole words, case-insensitive: a line holding one is a positive of the joy set.
JOY_WORDS = (
    "joy", "joys", "joyful", "joyfully", "joyous", "happy", "happier", "happiest", "happily", "happiness",
    "glad", "gladly", "gladness", "merry", "merrier", "merriest", "merrily", "mirth", "delight", "delights",
    "delighted", "delightful", "rejoice", "rejoices", "rejoiced", "rejoicing", "rejoic'd", "cheer", "cheers",
    "cheerful", "cheerfully", "cheerly",
)
# Word starts, case-insensitive: a line holding one of these is kept out of the negatives (but is no positive), so
# the negatives are free of joy and of its near-synonyms, inflections and negations ("enjoy'd", "unhappy").
JOY_NEAR_STEMS = (
    "joy", "enjoy", "overjoy", "happ", "unhapp", "glad", "merr", "mirth", "delight", "rejoic", "cheer", "jocund",
    "jolly", "jovial", "blithe", "bliss", "glee", "pleasure", "pleasant", "laugh", "smil", "exult", "rapture",
    "ecstas", "elat", "jubil", "felicit", "content", "gay", "sport",
)
JOY_WORD_PATTERN = re.compile(r"\b(?:" + "|".join(map(re.escape, JOY_WORDS)) + r")\b", re.IGNORECASE)
JOY_NEAR_PATTERN = re.compile(r"\b(?:" + "|".join(map(re.escape, JOY_NEAR_STEMS)) + r")", re.IGNORECASE)
# Shorter lines are mostly speaker names, stage directions and fragments.
MIN_LINE_WORDS = 5
# Negatives are drawn to follow the positives' lengths, in buckets this much longer than the one before (15%).
LENGTH_BUCKET_RATIO = 1.15


class ConceptSetError(ValueError):
    """The source holds too few examples of a class to build the set asked for."""


@dataclass(frozen=True)
class ConceptSet:
    """Positive and negative example texts, as many of each, and a line saying where they come from."""

    positives: list[str]
    negatives: list[str]
    source: str


def regex_function_set(limit_per_class: int, seed: int, *, max_chars: int = MAX_FUNCTION_CHARS,
                       files: Iterable[Path] | None = None) -> ConceptSet:
    """Functions and methods of the standard library's source (or of files) that call re.compile, re.match, ...
    against ones that never mention `re.`, at most max_chars each, negatives drawn to match the positives' lengths.

    A positive keeps its call within its first max_chars; at most MAX_POSITIVES_PER_FILE come from one file.
    """
    rng = random.Random(seed)
    positives: dict[str, None] = {}  # insertion-ordered sets: deduplicated, deterministic
    negatives: dict[str, None] = {}
    for path in sorted(stdlib_source_files() if files is None else files):
        file_positives: list[str] = []
        for function in functions_in_source(_read_source(path)):
            text = _truncated_lines(function.text, max_chars)
            if function.re_call_lines and min(function.re_call_lines) < text.count("\n") + 1:
                file_positives.append(text)
            elif not RE_MENTION.search(function.text):
                negatives.setdefault(text)
        capped = file_positives if len(file_positives) <= MAX_POSITIVES_PER_FILE else rng.sample(
            file_positives, MAX_POSITIVES_PER_FILE)
        positives.update(dict.fromkeys(capped))
    chosen = _balanced(list(positives), list(negatives), limit_per_class, rng, what="functions calling re.*")
    return ConceptSet(positives=chosen[0], negatives=chosen[1],
                      source=f"Python {sys.version.split()[0]} standard-library functions calling re.* (positives) or "
                             f"never mentioning re. (negatives), at most {max_chars} characters, seed {seed}")


def stdlib_source_files() -> Iterator[Path]:
    """Every .py file of the standard library, tests included (the public modules alone call re.* in ~60 functions).

    Read, never imported; installed packages (site-packages) are not the standard library.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if "site-packages" not in path.relative_to(root).parts:
            yield path


def _read_source(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:  # a few test files are in other encodings on purpose
        return ""


@dataclass(frozen=True)
class SourceFunction:
    """A top-level function or a method, dedented from its `def` line; re_call_lines: the lines (0 = the `def`)
    where it calls one of RE_PATTERN_FUNCTIONS on the name `re`."""

    text: str
    re_call_lines: tuple[int, ...]


def functions_in_source(source: str) -> list[SourceFunction]:
    """The module's top-level functions and its classes' methods, in source order; [] when it does not parse."""
    source = source.replace("\r\n", "\n").replace("\r", "\n")
    try:
        with warnings.catch_warnings():  # old escapes in strings warn; they change nothing here
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
    except (SyntaxError, ValueError):  # test data of Python 2 syntax, NUL bytes
        return []
    lines = source.split("\n")  # split once: ast.get_source_segment splits the whole source for every function
    return [
        SourceFunction(text=textwrap.dedent("\n".join(lines[node.lineno - 1 : node.end_lineno])),
                       re_call_lines=_re_call_lines(node))
        for node in _functions_and_methods(tree)
    ]


def _functions_and_methods(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node
        elif isinstance(node, ast.ClassDef):
            yield from (child for child in node.body if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))


def _re_call_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, ...]:
    return tuple(
        (node.func.end_lineno or node.lineno) - function.lineno
        for node in ast.walk(function)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name) and node.func.value.id == "re"
        and node.func.attr in RE_PATTERN_FUNCTIONS
    )


def _truncated_lines(text: str, max_chars: int) -> str:
    """The whole lines of text that fit in max_chars, or the first line cut at max_chars when even it does not."""
    text = text.rstrip()
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars + 1].rfind("\n")
    return text[:cut].rstrip() if cut > 0 else text[:max_chars]


def joy_line_set(text: str, limit_per_class: int, seed: int, *, min_words: int = MIN_LINE_WORDS) -> ConceptSet:
    """Lines of text (Shakespeare's) of at least min_words words holding one of JOY_WORDS, against lines holding
    no word starting with one of JOY_NEAR_STEMS, negatives drawn to match the positives' lengths."""
    lines = dict.fromkeys(line.strip() for line in text.splitlines())  # deduplicated, in order
    positives, negatives = [], []
    for line in lines:
        if len(line.split()) < min_words:
            continue
        if JOY_WORD_PATTERN.search(line):
            positives.append(line)
        elif not JOY_NEAR_PATTERN.search(line):
            negatives.append(line)
    chosen = _balanced(positives, negatives, limit_per_class, random.Random(seed), what="lines with a joy word")
    return ConceptSet(positives=chosen[0], negatives=chosen[1],
                      source=f"lines of at least {min_words} words with a joy word ({', '.join(JOY_WORDS)}) or with "
                             f"no word of joy nor its near-synonyms, seed {seed}")


def _balanced(positives: list[str], negatives: list[str], limit_per_class: int, rng: random.Random,
              what: str) -> tuple[list[str], list[str]]:
    """As many of each: up to limit_per_class positives drawn at random, then negatives matching their lengths."""
    if limit_per_class < 1:
        raise ConceptSetError(f"The set needs at least one text per class, not {limit_per_class}.")
    if not positives:
        raise ConceptSetError(f"The source holds no {what}.")
    chosen = positives if len(positives) <= limit_per_class else rng.sample(positives, limit_per_class)
    if len(negatives) < len(chosen):
        raise ConceptSetError(f"The source holds {len(negatives)} negatives for {len(chosen)} {what}.")
    return chosen, length_matched_sample(negatives, chosen, rng)


def length_matched_sample(pool: Sequence[str], reference: Sequence[str], rng: random.Random) -> list[str]:
    """One distinct text of pool per text of reference, each drawn from the texts of about the same length (the
    same LENGTH_BUCKET_RATIO bucket, or the nearest bucket that still holds texts)."""
    if len(pool) < len(reference):
        raise ConceptSetError(f"{len(pool)} texts cannot match the lengths of {len(reference)}.")
    buckets: dict[int, list[str]] = defaultdict(list)
    for text in pool:
        buckets[_length_bucket(text)].append(text)
    for texts in buckets.values():
        rng.shuffle(texts)
    drawn = []
    for text in reference:
        wanted = _length_bucket(text)
        nearest = min((key for key, texts in buckets.items() if texts), key=lambda key: (abs(key - wanted), key))
        drawn.append(buckets[nearest].pop())
    return drawn


def _length_bucket(text: str) -> int:
    return int(math.log(max(len(text), 1)) / math.log(LENGTH_BUCKET_RATIO))


def concept_set_write_jsonl(concept_set: ConceptSet, directory: Path) -> tuple[Path, Path]:
    """positives.jsonl and negatives.jsonl in directory, {"text": ...} a line, as the platform's uploads read them."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "positives.jsonl", directory / "negatives.jsonl"
    for path, texts in zip(paths, (concept_set.positives, concept_set.negatives), strict=True):
        path.write_text("".join(json.dumps({"text": text}, ensure_ascii=False) + "\n" for text in texts),
                        encoding="utf-8")
    return paths
