"""Hostile names in the Markdown reports of `midog evaluate` and `midog experiment` (issue 30):
scanner names, image names and folders holding HTML, script, `|`, backticks and Markdown
links appear as the text they are. Each report is rendered by a CommonMark renderer that
passes raw HTML through (as editors' previews and pandoc do), then checked twice: the HTML
holds no element or attribute the names brought (only our own figures as images), and in
headless Chromium no payload ran (each would set window.__pwned) while the names read as
text on the page."""

from __future__ import annotations

import html
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from midog.commands import main

markdown_it = pytest.importorskip("markdown_it", reason="renders the reports (markdown-it-py, requirements-dev.txt)")

SCANNER = '</script><script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"> | **b** `x` [l](javascript:window.__pwned=6)'
IMAGE = '<img src=x onerror="window.__pwned=3">.tiff'  # a file name may hold all of these, but no "/"
SKIPPED = "<svg onload=window.__pwned=4>'.tiff"
FOLDER = "pred` <img src=x onerror=window.__pwned=5> `|"
FIGURES = {"pr_curve.png", "f1_threshold.png", "bootstrap_f1.png", "training_curves.png"}
LINKS = {"table.md", "table.csv", "metrics.json"}  # the report's own links
SAFE_TAGS = {"html", "body", "h1", "h2", "p", "ul", "li", "code", "table", "thead", "tbody", "tr", "th", "td", "strong", "em", "img", "a"}


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def rendered(markdown: str) -> str:
    md = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table")
    return "<html><body>" + md.render(markdown) + "<script>document.body.dataset.ready = '1'</script></body></html>"


def check_html(page: str, names: list[str]) -> None:
    """No element or attribute from a name; each name in the page's text as it is."""
    parser = Elements()
    parser.feed(page.rsplit("<script>", 1)[0])  # our own marker script aside
    for tag, attrs in parser.tags:
        assert tag in SAFE_TAGS, (tag, attrs)
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)
        if tag == "img":
            assert attrs.get("src") in FIGURES, attrs
        if tag == "a":
            assert attrs.get("href") in LINKS, attrs
    text = "".join(parser.text)
    for name in names:
        assert name in text, (name, text[:3000])




def check_in_browser(chromium: str, page: Path, names: list[str], profile: Path) -> None:
    from browser import Browser

    browser = Browser(chromium, profile)
    try:
        browser.open(page)
        assert browser.evaluate("window.__pwned === undefined"), f"a payload ran: window.__pwned = {browser.evaluate('window.__pwned')}"
        text = browser.evaluate("document.body.innerText")
        for name in names:
            assert " ".join(name.split()) in " ".join(text.split()), name
    finally:
        browser.close()


def write_points(path: Path, points: list[list[float]]) -> None:
    entries = [{"point": p, "probability": 0.9, "name": "mitotic figure"} for p in points]
    path.write_text(json.dumps({"type": "Multiple points", "points": entries, "version": {"major": 1, "minor": 0}}))


def test_evaluate_report_shows_hostile_names_as_text(tmp_path: Path, chromium: str) -> None:
    pred = tmp_path / FOLDER
    pred.mkdir()
    gt = {IMAGE: [[0.1, 0.2, 0], [0.5, 0.5, 0]], "002.tiff": [[0.3, 0.3, 0]], SKIPPED: [[0.2, 0.2, 0]]}
    write_points(pred / (Path(IMAGE).stem + ".json"), [[0.1, 0.2, 0]])
    write_points(pred / "002.json", [[0.3, 0.3, 0], [0.9, 0.9, 0]])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "domains.json").write_text(json.dumps({IMAGE: SCANNER, "002.tiff": "B", SKIPPED: SCANNER}))
    out = tmp_path / "out"
    assert main(["evaluate", "--predictions", str(pred), "--ground-truth", str(tmp_path / "gt.json"), "--domains",
                 str(tmp_path / "domains.json"), "--output", str(out), "--bootstrap", "0"]) == 0
    for name, names in (("report.md", [SCANNER, SKIPPED, str(pred)]), ("table.md", [SCANNER])):
        page = rendered((out / name).read_text())
        check_html(page, names)
        (out / f"{name}.html").write_text(page)
        check_in_browser(chromium, out / f"{name}.html", names, tmp_path / f"profile-{name}")


def test_experiment_report_shows_hostile_names_as_text(tmp_path: Path, chromium: str) -> None:
    from midog.atomic import write_json_atomic
    from midog.config import run_config
    from midog.evaluation.io import read_predictions
    from midog.evaluation.tables import evaluate
    from midog.training.experiment import MODELS, ExperimentConfig, ExperimentResult, ModelResult, ValidationCurve
    from midog.training.experiment_report import write_report

    rng = np.random.default_rng(0)
    unseen = "<img src=x onerror=window.__pwned=7>`|"
    gt = {f"{i:03d}.tiff": np.column_stack([rng.uniform(0, 1, (4, 2)), np.zeros(4)]) for i in range(1, 5)}
    domains = {n: (SCANNER, SCANNER, unseen, unseen)[i] for i, n in enumerate(sorted(gt))}
    status = {SCANNER: "seen, labelled", unseen: "unseen"}
    data = tmp_path / FOLDER
    data.mkdir()
    cfg = ExperimentConfig(run_config(str(data / "MIDOG.json"), str(tmp_path / "exp"), test_per_scanner=1), bootstrap=10)
    results = []
    for k, model in enumerate(MODELS):
        pred = tmp_path / "exp" / "seed0" / f"{model}-predictions"
        for n, pts in gt.items():
            points = [{"point": p.tolist(), "probability": float(rng.uniform(0.3, 1.0)), "name": "mitotic figure"} for p in pts[: 1 + (k + int(n[:3])) % 4]]
            write_json_atomic(pred / f"{n[:3]}.json", {"type": "Multiple points", "points": points, "version": {"major": 1, "minor": 0}})
        found = read_predictions(pred)
        ev = evaluate(gt, {f"{s}.tiff": c for s, c in found.items()}, domains, 0.5, False, 10, 0)
        val = ValidationCurve(np.array([0.5]), np.array([1.0]), {}, 0.5)
        results.append(ModelResult(model, 0, tmp_path / "exp" / "seed0" / model, {"best": {"epoch": 1}}, val, ev, pred, [], None))
    report = write_report(ExperimentResult(cfg, results, status, {}), tmp_path / "exp")
    page = rendered(report.read_text())
    check_html(page, [SCANNER, unseen, str(data / "MIDOG.json")])
    (tmp_path / "report.html").write_text(page)
    check_in_browser(chromium, tmp_path / "report.html", [SCANNER, unseen], tmp_path / "profile")


def test_the_escapes_themselves() -> None:
    from midog.evaluation.markdown import md_code, md_text

    assert md_text("a|b") == "a\\|b" and md_text("<b>&") == "&lt;b&gt;&amp;" and md_text("x\ny") == "x\\\\ny"  # the newline shown as \\n
    assert md_code("a`b") == "`` a`b ``" and md_code("plain") == "`plain`"
    for value in (SCANNER, IMAGE, FOLDER, "``` ` ``"):
        assert html.unescape(md_text(value)).replace("\\", "") == value.replace("\\", "")
