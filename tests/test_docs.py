"""Docs that users have: every pointer into docs/reference-algorithm.md names a section
that exists, and nothing users read cites the development-only SPEC document."""

from __future__ import annotations

import re

from conftest import ROOT

DOC = ROOT / "docs" / "reference-algorithm.md"
USER_FACING = ["midog/**/*.py", "process.py", "README.md", "BENCHMARKS.md", "container/*", "*.sh", "Dockerfile", "docs/*.md"]


def anchors(markdown: str) -> set[str]:
    # GitHub's rule for heading ids: lower case, punctuation dropped, spaces to hyphens.
    headings = re.findall(r"^#{1,6} +(.+?) *$", markdown, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def files():
    for pattern in USER_FACING:
        yield from (p for p in ROOT.glob(pattern) if p.is_file())


def test_every_pointer_into_the_reference_doc_names_a_section():
    known = anchors(DOC.read_text())
    assert {"network", "tiling", "thresholds-and-nms", "training-recipe", "official-metric"} <= known
    cited = 0
    for path in [*files(), *ROOT.glob("tests/*.py")]:
        text = path.read_text(errors="replace")
        for match in re.finditer(r"reference-algorithm\.md(#[\w-]+)((?:, #[\w-]+)*)", text):
            for anchor in re.findall(r"#([\w-]+)", match.group(0)):
                cited += 1
                assert anchor in known, f"{path.relative_to(ROOT)}: #{anchor} is no section of {DOC.name}"
    assert cited >= 10
    for anchor in re.findall(r"\]\(#([\w-]+)\)", DOC.read_text()):  # the page's own links
        assert anchor in known, f"{DOC.name} links to #{anchor}, which is no section of it"


def test_no_citation_of_the_spec():
    for path in files():
        text = path.read_text(errors="replace")
        hits = re.findall(r"\bSPEC\b[^\n]{0,20}", text)
        assert not hits, f"{path.relative_to(ROOT)} cites a document users do not have: {hits}"
