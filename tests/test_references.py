"""docs/REFERENCES.md resolves every author-year citation in the package's docstrings."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"\b([A-Z][a-zà-ÿ\-]+)(?: (?:&|and) [A-Z][a-z]+)? \(?((?:19|20)\d\d)[a-z]?\b")


def test_every_cited_author_is_in_the_references() -> None:
    references = (ROOT / "docs" / "REFERENCES.md").read_text(encoding="utf-8")
    cited = {(m.group(1), m.group(2), str(path.relative_to(ROOT)))
             for path in (ROOT / "src").rglob("*.py")
             for m in CITATION.finditer(path.read_text(encoding="utf-8"))}
    assert cited, "the pattern finds no citation at all"
    missing = sorted(c for c in cited if c[0] not in references)
    assert not missing, f"cited but not in docs/REFERENCES.md: {missing}"
