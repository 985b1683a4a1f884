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


def subcommand_parsers():
    """Every `midog` subcommand's parser, however many there are, and process.py's."""
    import argparse
    import importlib.util

    from midog.commands.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    yield from sub.choices.items()
    spec = importlib.util.spec_from_file_location("process_for_docs", ROOT / "process.py")
    process = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(process)
    yield "process.py", process.build_parser()


def test_every_option_of_every_command_is_documented():
    docs = (ROOT / "README.md").read_text() + "".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))
    documented = set(re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", docs))
    missing, seen = [], 0
    for name, parser in subcommand_parsers():
        for action in parser._actions:
            for flag in action.option_strings:
                seen += 1
                if flag not in documented and flag not in ("-h", "--help"):
                    missing.append(f"{name} {flag}")
    assert seen > 100, "the walk found too few options: is it reading the parsers?"
    assert not missing, f"options not in README.md or docs/*.md: {missing}"


def test_readme_is_a_front_page_whose_links_lead_somewhere():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    first = text.splitlines()[:12]
    assert any("pip install -r requirements.txt -e . && .venv/bin/midog demo" in line for line in first)
    assert any("pip install -r requirements-dev.txt -e . && .venv/bin/python -m pytest" in line for line in first)
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert len(links) >= 10
    for link in links:
        if "://" not in link:
            assert (ROOT / link).exists(), f"README.md links to {link}, which does not exist"
    for page in (ROOT / "docs").glob("*.md"):
        for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / link).exists(), f"{page.relative_to(ROOT)} links to {link}, which does not exist"
