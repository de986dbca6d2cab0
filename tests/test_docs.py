"""The README's "Known differences" section is docs/differences.md, word for word, and every
difference the fuzzers accept (tests/fuzz/known.py) is listed once: by design in that file, or
as not fixed yet in tests/fuzz/pending.txt.

``python tests/test_docs.py --write`` (``make docs``) copies the file into the README.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DIFFERENCES = ROOT / "docs" / "differences.md"
BEGIN = "<!-- known differences: docs/differences.md, copied by `make docs` -->\n"
END = "<!-- end of known differences -->\n"

sys.path.insert(0, str(ROOT / "tests" / "fuzz"))
import known  # noqa: E402


def readme_with_differences(readme: str, differences: str) -> str:
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[:start] + differences + readme[end:]


def test_readme_known_differences_section_is_the_file():
    readme = README.read_text(encoding="utf-8")
    assert readme.count(BEGIN) == 1 and readme.count(END) == 1
    section = readme[readme.index(BEGIN) + len(BEGIN) : readme.index(END)]
    assert section == DIFFERENCES.read_text(encoding="utf-8"), (
        "README's known differences differ from docs/differences.md: run `make docs`"
    )


def test_every_entry_has_one_key():
    text = DIFFERENCES.read_text(encoding="utf-8")
    entries = [line for line in text.splitlines() if line.startswith("- ")]
    keys = known.documented_keys()
    assert len(keys) == len(entries), "each entry starts with its [`key`]"
    assert len(set(keys)) == len(keys), "keys are unique"


def test_every_tolerated_difference_is_listed_once():
    documented, pending = set(known.documented_keys()), known.pending_keys()
    assert not documented & pending, "a difference is by design or pending, not both"
    unlisted = set(known.MATCHERS) - documented - pending
    assert not unlisted, f"matchers whose difference is listed nowhere: {sorted(unlisted)}"


def test_pending_file_says_what_it_is():
    text = Path(known.PENDING).read_text(encoding="utf-8")
    assert "Remove" in text
    for line in text.splitlines():
        if line and not line.startswith("#"):
            assert re.match(r"^[a-z0-9-]+: \S", line), f"not 'key: what differs': {line!r}"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_docs.py --write")
    text = README.read_text(encoding="utf-8")
    README.write_text(
        readme_with_differences(text, DIFFERENCES.read_text(encoding="utf-8")), encoding="utf-8"
    )
