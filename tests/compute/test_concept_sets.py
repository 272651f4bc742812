"""Concept sets: functions that call re.* against functions that never mention `re.`, lines with a joy word against
lines without one, both balanced and the same for the same seed, written as the uploads read them."""

import random
import re
import sysconfig
import textwrap
from pathlib import Path

import pytest

from workers.compute.concept_sets import (
    MAX_POSITIVES_PER_FILE,
    ConceptSetError,
    concept_set_write_jsonl,
    functions_in_source,
    joy_line_set,
    length_matched_sample,
    regex_function_set,
    stdlib_source_files,
)
from workers.compute.corpus import documents_from_jsonl

RE_CALL = re.compile(r"\bre\.(?:compile|match|search|sub|findall|fullmatch|finditer|split)\s*\(")
# Standard-library modules with both kinds of function, read in a second or so.
STDLIB_FILES = ("fnmatch.py", "glob.py", "textwrap.py", "difflib.py", "tokenize.py", "string.py", "shlex.py",
                "smtplib.py", "imaplib.py", "sysconfig.py", "_osx_support.py", "doctest.py", "pydoc.py",
                "urllib/parse.py", "urllib/request.py", "email/utils.py", "json/decoder.py")

SOURCE = '''
import re

def finds(text):
    return re.findall(r"\\w+", text)

def adds(a, b):
    return a + b

def mentions_only(text):
    """Unlike re.match, this reads the first word."""
    return text.split()[0]

class Parser:
    def compiled(self):
        pattern = re.compile("x+")
        return pattern

    def plain(self, value):
        return value * 2

    def other_re(self):
        return self.re.flags

def outer():
    def inner():
        return re.sub("a", "b", "abc")
    return inner

async def halves(value):
    return value / 2
'''


@pytest.fixture(scope="module")
def stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    return [root / name for name in STDLIB_FILES]


def _write_sources(directory: Path, sources: dict[str, str]) -> list[Path]:
    paths = []
    for name, source in sources.items():
        path = directory / name
        path.write_text(textwrap.dedent(source), encoding="utf-8")
        paths.append(path)
    return paths


def test_functions_are_top_level_functions_and_methods_in_source_order() -> None:
    names = [function.text.split("(")[0] for function in functions_in_source(SOURCE)]
    assert names == ["def finds", "def adds", "def mentions_only", "def compiled", "def plain", "def other_re",
                     "def outer", "async def halves"]


def test_methods_are_dedented_to_their_def() -> None:
    compiled = functions_in_source(SOURCE)[3]
    assert compiled.text.startswith("def compiled(self):\n    pattern = re.compile")


def test_a_source_that_does_not_parse_has_no_functions() -> None:
    assert functions_in_source("def broken(:\n    pass\n") == []


def test_positives_call_re_and_negatives_never_mention_it(tmp_path: Path) -> None:
    concept_set = regex_function_set(10, seed=0, files=_write_sources(tmp_path, {"module.py": SOURCE}))
    # outer's text holds the call too, in the function nested in it.
    assert sorted(text.split("(")[0] for text in concept_set.positives) == ["def compiled", "def finds", "def outer"]
    assert len(concept_set.negatives) == 3
    assert not any("re." in text for text in concept_set.negatives)
    assert sorted(text.split("(")[0] for text in concept_set.negatives) == ["async def halves", "def adds", "def plain"]


def test_a_function_that_only_names_re_in_a_docstring_is_in_neither_class(tmp_path: Path) -> None:
    concept_set = regex_function_set(10, seed=0, files=_write_sources(tmp_path, {"module.py": SOURCE}))
    assert not any("mentions_only" in text for text in [*concept_set.positives, *concept_set.negatives])


def test_stdlib_positives_call_re_within_their_text(stdlib_files: list[Path]) -> None:
    concept_set = regex_function_set(500, seed=0, files=stdlib_files)
    assert len(concept_set.positives) >= 15
    assert all(RE_CALL.search(text) for text in concept_set.positives)
    assert not any(re.search(r"\bre\.", text) for text in concept_set.negatives)


def test_stdlib_set_is_balanced_and_deduplicated(stdlib_files: list[Path]) -> None:
    concept_set = regex_function_set(500, seed=0, files=stdlib_files)
    assert len(concept_set.positives) == len(concept_set.negatives)
    assert len(set(concept_set.positives)) == len(concept_set.positives)
    assert len(set(concept_set.negatives)) == len(concept_set.negatives)


def test_the_limit_caps_each_class(stdlib_files: list[Path]) -> None:
    concept_set = regex_function_set(7, seed=0, files=stdlib_files)
    assert len(concept_set.positives) == len(concept_set.negatives) == 7


def test_the_same_seed_gives_the_same_set_and_another_seed_another(stdlib_files: list[Path]) -> None:
    first, again = regex_function_set(10, seed=3, files=stdlib_files), regex_function_set(10, seed=3,
                                                                                          files=stdlib_files)
    other = regex_function_set(10, seed=4, files=stdlib_files)
    assert first == again
    assert (first.positives, first.negatives) != (other.positives, other.negatives)


def test_functions_are_cut_at_a_whole_line_within_max_chars(stdlib_files: list[Path]) -> None:
    concept_set = regex_function_set(500, seed=0, max_chars=300, files=stdlib_files)
    texts = [*concept_set.positives, *concept_set.negatives]
    assert all(len(text) <= 300 for text in texts)
    assert any(len(text) > 200 for text in texts)
    # Each text is its function's leading lines, whole: every line of it is a line of the file.
    source_lines = {line.strip() for path in stdlib_files for line in path.read_text(encoding="utf-8").splitlines()}
    assert all(line.strip() in source_lines for text in texts for line in text.splitlines())


def test_a_positive_whose_call_is_cut_off_is_dropped(tmp_path: Path) -> None:
    late_call = "def late(text):\n" + "    x = 1\n" * 40 + "    return re.match('a', text)\n"
    early_call = "def early(text):\n    return re.match('a', text)\n"
    source = f"import re\n\n{late_call}\n{early_call}\ndef plain():\n    pass\n\ndef empty():\n    return None\n"
    files = _write_sources(tmp_path, {"module.py": source})
    assert [text.split("(")[0] for text in regex_function_set(10, seed=0, max_chars=200, files=files).positives] == [
        "def early"]
    assert len(regex_function_set(10, seed=0, max_chars=2000, files=files).positives) == 2


def test_no_file_gives_more_than_its_share_of_positives(tmp_path: Path) -> None:
    many = "import re\n\n" + "".join(f"def find_{i}(text):\n    return re.findall('{i}', text)\n\n" for i in range(40))
    plain = "".join(f"def plain_{i}(value):\n    return value + {i}\n\n" for i in range(60))
    concept_set = regex_function_set(100, seed=0, files=_write_sources(tmp_path, {"many.py": many, "plain.py": plain}))
    assert len(concept_set.positives) == MAX_POSITIVES_PER_FILE


def test_too_few_negatives_is_an_error_naming_the_counts(tmp_path: Path) -> None:
    source = "import re\n\ndef a(t):\n    return re.match('a', t)\n\ndef b(t):\n    return re.match('b', t)\n"
    with pytest.raises(ConceptSetError, match="0 negatives for 2"):
        regex_function_set(10, seed=0, files=_write_sources(tmp_path, {"module.py": source}))


def test_stdlib_source_files_are_read_from_the_stdlib_not_site_packages() -> None:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = set(stdlib_source_files())
    assert {root / "glob.py", root / "re" / "__init__.py", root / "email" / "utils.py"} <= files
    assert not any("site-packages" in path.parts for path in files)


JOY_TEXT = """\
HAMLET.
O, what a happy day it is for us!
The joy of kings is in their people's hearts,
Bring me the horse and saddle him at once.
Joyce walked along the river to the town,
I do enjoy the music of the evening air,
He was so unhappy with the cold grey morning,
My lords, the army marches toward the sea.
We shall rejoice tomorrow with the bells of York,
Glad.
The merry wives of Windsor are at home,
Go fetch the lantern from the kitchen shelf, boy.
Let us be gone before the morning light comes,
The sword is drawn and the gates are shut tight.
Within this wall of flesh there is a soul,
"""


def test_joy_lines_hold_a_joy_word_and_the_others_none() -> None:
    concept_set = joy_line_set(JOY_TEXT, 10, seed=0)
    assert sorted(concept_set.positives) == sorted([
        "O, what a happy day it is for us!",
        "The joy of kings is in their people's hearts,",
        "We shall rejoice tomorrow with the bells of York,",
        "The merry wives of Windsor are at home,",
    ])
    assert len(concept_set.negatives) == 4
    assert set(concept_set.negatives) <= {
        "Bring me the horse and saddle him at once.",
        "My lords, the army marches toward the sea.",
        "Go fetch the lantern from the kitchen shelf, boy.",
        "Let us be gone before the morning light comes,",
        "The sword is drawn and the gates are shut tight.",
        "Within this wall of flesh there is a soul,",
    }


def test_joy_words_match_whole_words_only() -> None:
    concept_set = joy_line_set(JOY_TEXT, 10, seed=0)
    assert not any("Joyce" in line or "enjoy" in line or "unhappy" in line for line in concept_set.positives)


def test_near_synonyms_of_joy_are_kept_out_of_the_negatives() -> None:
    concept_set = joy_line_set(JOY_TEXT, 10, seed=0)
    assert not any("enjoy" in line or "unhappy" in line for line in concept_set.negatives)


def test_short_lines_are_left_out() -> None:
    concept_set = joy_line_set(JOY_TEXT, 10, seed=0)
    assert "Glad." not in concept_set.positives and "HAMLET." not in concept_set.negatives


def test_joy_set_is_balanced_and_deterministic_per_seed() -> None:
    joy = [f"Line {i} brings the happy news of the day to all." for i in range(30)]
    rest = [f"Line {i} brings the plain news of the {'x' * (i % 7)} day to all." for i in range(80)]
    text = "\n".join([*joy, *rest])
    first, again, other = joy_line_set(text, 12, 5), joy_line_set(text, 12, 5), joy_line_set(text, 12, 6)
    assert len(first.positives) == len(first.negatives) == 12
    assert first == again
    assert (first.positives, first.negatives) != (other.positives, other.negatives)


def test_a_text_without_joy_is_an_error() -> None:
    with pytest.raises(ConceptSetError, match="no lines with a joy word"):
        joy_line_set("The sword is drawn and the gates are shut tight.\n", 10, seed=0)


def test_negatives_follow_the_positives_lengths() -> None:
    pool = [str(copy) + "n" * (length - 1) for length in range(10, 400) for copy in range(3)]
    reference = ["p" * 20] * 10 + ["p" * 300] * 10
    drawn = length_matched_sample(pool, reference, random.Random(0))
    assert len(set(drawn)) == len(drawn) == 20
    assert all(17 <= len(text) <= 23 for text in drawn[:10])
    assert all(260 <= len(text) <= 345 for text in drawn[10:])


def test_length_matching_draws_distinct_texts_from_the_nearest_bucket_when_one_runs_out() -> None:
    pool = ["a" * 10, "b" * 10, "c" * 100]
    drawn = length_matched_sample(pool, ["x" * 10] * 3, random.Random(0))
    assert sorted(drawn) == sorted(pool)


def test_sets_are_written_as_jsonl_the_uploads_read(tmp_path: Path) -> None:
    concept_set = joy_line_set(JOY_TEXT, 10, seed=0)
    positives, negatives = concept_set_write_jsonl(concept_set, tmp_path / "joy")
    assert documents_from_jsonl(positives.read_text(encoding="utf-8").splitlines()) == concept_set.positives
    assert documents_from_jsonl(negatives.read_text(encoding="utf-8").splitlines()) == concept_set.negatives
