"""The review page (`midog review`): one self-contained HTML page per slide, opened from disk
in any browser with no network, and an index page for the cohort.

The page shows the slide through a tile pyramid written beside it (midog.results.review_tiles),
every candidate at every zoom, the tissue outline and the hotspot, a threshold slider, a
gallery of the best-scoring candidates and the count table. Everything the page shows is
computed here, in Python, by the functions `midog count` uses: at each of the slider's
thresholds the count, the hotspot and the score are precomputed, so the page recounts live
without re-implementing the hotspot search in JavaScript and agrees with
`midog count --threshold T` by construction. Candidates with a probability above T are
mitotic figures at threshold T, as the detector names them.

Layout of an output folder: <name>.html and its pictures in <name>_files/ (tiles/<level>/,
crops/, thumb.jpg), index.html for the cohort.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import shutil
from urllib.parse import quote
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..atomic import write_text_atomic
from ..config import REFERENCE
from ..detector.detections import Detections, Thumbnail
from .count import THUMBNAIL_SIDE, CountOptions, count_in_tissue, tissue_map
from ..errors import UsageError
from .hotspot import Growing, TissueMap, region_size
from .reader import at_threshold
from . import review_tiles as tiles

SLIDER_STEP = 0.01
SLIDER_THRESHOLDS = tuple(round(i * SLIDER_STEP, 2) for i in range(100))  # 0.00 ... 0.99
ENTRY = "entry.json"  # in <name>_files/: the slide's row of the index, for `index_folder`
TILE_MARGIN_CELLS = 4  # tiles are written this many tissue-mask cells around tissue


@dataclass(frozen=True)
class ReviewOptions:
    count: CountOptions = field(default_factory=CountOptions)
    tile_format: str = "jpeg"
    gallery: int = 200  # crops of the best-scoring candidates; the page stays light on big slides
    threshold: float | None = None  # where the slider starts; None: the detector's operating point
    progress: bool = True
    review_floor: float | None = None  # candidates offered for review: p >= this; None: the candidate threshold


@dataclass(frozen=True)
class ReviewEntry:
    """One slide of the cohort index: its page, or the one line that says why it has none."""

    name: str
    page: str | None = None
    thumbnail: str | None = None
    figures: int | None = None
    per_mm2: float | None = None
    hotspot: int | None = None
    score: int | None = None
    threshold: float | None = None
    error: str | None = None
    notes: tuple[str, ...] = ()  # warnings for the command to show
    review_key: str | None = None  # where the page keeps its decisions in the browser, for the index's progress
    offered: int | None = None  # candidates offered for review
    hotspot_area: str | None = None  # e.g. "2 mm² circle", for the index's header


def url(name: str) -> str:
    """A file name as a relative URL: "./" first, so that a name like "javascript:..." is a
    path and not a scheme, and quoted, so that "#" or "?" in it are part of the name."""
    return "./" + quote(name)


def result_hash(found: Detections, source: str | Path) -> str:
    """The content hash the page keys its decisions by: the result file's bytes, else the points."""
    path = Path(source) if source else None
    if path is not None and path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return hashlib.sha256(np.ascontiguousarray(found.xy_mm, np.float64).tobytes()).hexdigest()


def review_order(found: Detections, floor: float | None) -> list[int]:
    """The candidates offered for review: those at or above the floor, best first; every
    point, in file order, when the result has no probabilities."""
    if not _thresholded(found):
        return list(range(len(found)))
    floor = REFERENCE.candidate_threshold if floor is None else floor
    order = _gallery_order(found)
    return [int(i) for i in order if found.scores[i] >= floor]


def _thresholded(found: Detections) -> bool:
    return len(found) > 0 and not np.isnan(found.scores).any()


def _summary_entry(summary: dict[str, Any], spacing: tuple[float, float]) -> dict[str, Any]:
    spot = summary["hotspot"]
    return {
        "figures": summary["mitotic_figures"],
        "per_mm2": summary["per_mm2"],
        "hotspot": None if spot is None else {
            "cx": spot["center_mm"][0] / spacing[0], "cy": spot["center_mm"][1] / spacing[1],
            "count": spot["count"], "per_mm2": spot["per_mm2"], "in_tissue_mm2": spot["area_in_tissue_mm2"],
            "tissue_share": spot["tissue_share"], "per_mm2_of_tissue": spot["per_mm2_of_tissue"], "per_fields": spot.get("per_fields"),
        },
        "score": summary["score"],
        "notes": summary["notes"],
    }


def counts_by_threshold(found: Detections, tissue: TissueMap, options: CountOptions, source: str | Path,
                        progress: bool = False) -> tuple[list[float | None], list[dict[str, Any]]]:
    """What the count table shows at each slider position: the count of `midog count` at
    each threshold, or once, as the file names the points, when it has no probabilities.
    The exact hotspot search at each position is most of a whole slide's review time."""
    from tqdm import tqdm

    spacing = found.spacing_mm
    if not _thresholded(found):
        return [None], [_summary_entry(count_in_tissue(found, tissue, options).summary, spacing)]
    # The figures at a higher threshold are a subset of those at a lower one, so a set is
    # named by its size: each distinct set is counted (and its hotspot searched) once, from
    # the highest threshold down, each search starting from the last one's hotspot and
    # searching only what the new figures can change (find_hotspot's grown sets: exact).
    in_tissue = tissue.contains(found.xy_mm) if len(found) else np.zeros(0, bool)
    scores = found.scores.astype(np.float64)
    cache: dict[int, dict[str, Any]] = {}
    entries: list[dict[str, Any]] = []
    growing = Growing(found.xy_mm, tissue, options.shape, options.area_mm2)
    for t in tqdm(SLIDER_THRESHOLDS[::-1], desc=f"{Path(source).name} hotspots", unit="threshold", disable=not progress, leave=False):
        n = int(((scores > t) & in_tissue).sum())
        if n not in cache:
            cache[n] = _summary_entry(count_in_tissue(at_threshold(found, t, source), tissue, options, growing).summary, spacing)
        entries.append(cache[n])
    return list(SLIDER_THRESHOLDS), entries[::-1]


def tissue_path(tissue: TissueMap, spacing: tuple[float, float]) -> str:
    """The tissue outline as an SVG path in level-0 pixels."""
    horizontal, vertical = tissue.boundary()
    sx, sy = spacing
    parts = [f"M{x0 / sx:.1f} {y / sy:.1f}H{x1 / sx:.1f}" for y, x0, x1 in horizontal]
    parts += [f"M{x / sx:.1f} {y0 / sy:.1f}V{y1 / sy:.1f}" for x, y0, y1 in vertical]
    return "".join(parts)


def start_index(thresholds: list[float | None], wanted: float | None) -> int:
    """The slider position nearest to `wanted` (default: the detector's operating point)."""
    if thresholds == [None]:
        return 0
    target = REFERENCE.threshold if wanted is None else wanted
    return int(np.argmin([abs(t - target) for t in thresholds]))  # type: ignore[operator]


def review_slide(found: Detections, image: Path, out_dir: Path, name: str, options: ReviewOptions = ReviewOptions(),
                 source: str | Path = "") -> ReviewEntry:
    """Write <out_dir>/<name>.html and <name>_files/ for one slide's detections (their
    spacing: the one the result was made at); returns its index entry. The slider starts at
    `options.threshold`, else at the detections' operating point."""
    spacing_mm = found.spacing_mm
    if options.threshold is None:
        options = replace(options, threshold=float(found.threshold))
    from ..slides.readers import open_slide
    from ..slides.tissue import tissue_mask

    files = out_dir / f"{name}_files"
    partial = out_dir / f"{name}_files.partial"
    shutil.rmtree(partial, ignore_errors=True)
    # Opened at the result's spacing: the image need not have its own.
    with open_slide(image, spacing_mm[0] * 1000) as slide:
        spacing, size = spacing_mm, (slide.width, slide.height)
        thumbnail, downsample = slide.thumbnail(THUMBNAIL_SIDE)
        tissue = tissue_map(Thumbnail(thumbnail, downsample), size, spacing)
        thresholds, entries = counts_by_threshold(found, tissue, options.count, source or image, options.progress)
        levels = tiles.pyramid_levels(*size)
        keep = tissue_mask(thumbnail, dilate_px=TILE_MARGIN_CELLS) if slide.is_whole_slide else None
        wanted = tiles.tiles_to_write(levels, keep, downsample)
        try:
            tiles.write_pyramid(slide, partial / "tiles", levels, wanted, options.tile_format, options.progress)
            xy_px = found.xy_mm / np.asarray(spacing, float)
            order = _gallery_order(found)[: options.gallery]
            crops = tiles.write_crops(slide, partial / "crops", xy_px[order], tiles.crop_side_px(spacing), options.progress)
            (partial / "thumb.jpg").write_bytes(tiles.thumbnail_jpeg(thumbnail))
            start = start_index(thresholds, options.threshold)
            at = entries[start]
            review = {"hash": result_hash(found, source), "order": review_order(found, options.review_floor),
                      "floor": (REFERENCE.candidate_threshold if options.review_floor is None else options.review_floor) if _thresholded(found) else None,
                      "labels_file": f"{Path(image.name).stem}.labels.json"}
            entry = ReviewEntry(name, url(f"{name}.html"), url(f"{files.name}/thumb.jpg"), at["figures"], at["per_mm2"], (at["hotspot"] or {}).get("count"), at["score"],
                                thresholds[start], review_key=f"midog-review:{review['hash']}", offered=len(review["order"]),
                                hotspot_area=f"{options.count.area_mm2:.4g} mm² {options.count.shape}")
            (partial / ENTRY).write_text(json.dumps(vars(entry)))
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    # The pictures replace the old ones whole, and only then the page that refers to them.
    shutil.rmtree(files, ignore_errors=True)
    partial.rename(files)
    data = page_data(found, tissue, size, levels, wanted, thresholds, entries, start, options, name, image, crops, order)
    data["review"] = review
    write_text_atomic(out_dir / f"{name}.html", render_page(data))
    return entry


def _gallery_order(found: Detections) -> np.ndarray:
    """Best score first; file order where there are no probabilities."""
    if not _thresholded(found):
        return np.arange(len(found))
    return np.argsort(-found.scores.astype(np.float64), kind="stable")


def page_data(found: Detections, tissue: TissueMap, size: tuple[int, int], levels: list[tiles.Level], wanted: list[np.ndarray],
              thresholds: list[float | None], entries: list[dict[str, Any]], start: int, options: ReviewOptions, name: str, image: Path,
              crops: list[str], order: np.ndarray) -> dict[str, Any]:
    """Everything the page's script reads, as JSON-ready values."""
    spacing = found.spacing_mm
    xy = found.xy_mm / np.asarray(spacing, float)
    in_tissue = tissue.contains(found.xy_mm) if len(found) else np.zeros(0, bool)
    reach = region_size(options.count.shape, options.count.area_mm2)
    if options.count.shape == "square":
        reach /= 2
    return {
        "name": name,
        "image": image.name,
        "width": size[0], "height": size[1], "spacing_mm": list(spacing),
        "tile": tiles.TILE_PX, "ext": tiles.FORMATS[options.tile_format], "tiles": url(f"{name}_files/tiles"),
        "levels": [
            {"ds": lv.downsample, "w": lv.width, "h": lv.height, "cols": lv.cols, "rows": lv.rows,
             "have": None if w.all() else "".join("1" if v else "0" for v in w.ravel())}
            for lv, w in zip(levels, wanted)
        ],
        "points": {
            "x": [round(float(v), 1) for v in xy[:, 0]], "y": [round(float(v), 1) for v in xy[:, 1]],
            "p": None if not _thresholded(found) else found.scores.astype(np.float64).tolist(),
            "mitotic": [int(v) for v in found.mitotic], "tissue": [int(v) for v in in_tissue],
        },
        "thresholds": thresholds, "counts": entries, "start": start,
        "hotspot": {"shape": options.count.shape, "area_mm2": options.count.area_mm2, "rx": reach / spacing[0], "ry": reach / spacing[1]},
        "tissue_area_mm2": tissue.area_mm2(),
        "thumb": url(f"{name}_files/thumb.jpg"),
        "tissue_path": tissue_path(tissue, spacing),
        "gallery": [{"i": int(i), "src": url(f"{name}_files/crops/{c}")} for i, c in zip(order.tolist(), crops)],
        "gallery_total": len(found),
    }


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


def _script_json(data: Any) -> str:
    # Inside <script>, "</" would end the element early; JSON allows "<\/".
    return json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def render_page(data: dict[str, Any]) -> str:
    page = _asset("review_page.html")
    return (page.replace("{{TITLE}}", html.escape(f"{data['name']}: midog review"))
            .replace("{{CSS}}", _asset("review.css"))
            .replace("{{JS_REVIEW}}", _asset("review_mode.js"))
            .replace("{{JS}}", _asset("review.js"))
            .replace("{{DATA}}", _script_json(data)))


def write_index(entries: list[ReviewEntry], out_dir: Path) -> Path:
    """index.html: every slide with its count, hotspot count, score and thumbnail, sortable."""
    rows = [{k: v for k, v in vars(e).items()} for e in entries]
    for row in rows:
        if row["per_mm2"] is not None and not math.isfinite(row["per_mm2"]):
            row["per_mm2"] = None
    page = (_asset("review_index.html").replace("{{CSS}}", _asset("review.css")).replace("{{DATA}}", _script_json(rows)))
    return write_text_atomic(out_dir / "index.html", page)


def page_names(results: list[Path]) -> list[str]:
    """A page name per result: its stem, numbered where stems repeat."""
    names: list[str] = []
    for path in results:
        stem, k = path.stem, 2
        name = stem
        while name in names or name == "index":
            name, k = f"{stem}-{k}", k + 1
        names.append(name)
    return names


def index_folder(out_dir: Path) -> Path:
    """index.html of every page in `out_dir` (their <name>_files/entry.json): what
    `midog detect --review` rewrites after each image, so it lists every slide done so far."""
    entries = []
    for path in sorted(out_dir.glob(f"*_files/{ENTRY}")):
        try:
            entries.append(ReviewEntry(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):  # a page being replaced right now: listed next time
            continue
    return write_index(entries, out_dir)


def review_all(results: list[Path], images: list[Path], out_dir: Path, mpp: float | None = None, options: ReviewOptions = ReviewOptions()) -> Iterator[ReviewEntry]:
    """Review each result on its image, yielding its entry as it is done; a slide that fails
    yields an entry with its error line and the others go on. The caller writes the index."""
    from ..errors import image_error_line
    from .sidecar import read_recorded

    from .sidecar import is_sidecar

    # `out/*.json` also matches what midog writes beside each result: those are not results.
    results = [r for r in results if not (is_sidecar(r) or r.name.endswith(".count.json"))]
    if len(results) != len(images):
        raise UsageError(f"{len(results)} results but {len(images)} images: give one image per result, in the same order")
    out_dir.mkdir(parents=True, exist_ok=True)
    for result, image, name in zip(results, images, page_names(results)):
        try:
            found, notes = read_recorded(result, image, mpp)  # the sidecar's threshold, when there is one
            entry = review_slide(found, image, out_dir, name, options, result)
            yield replace(entry, notes=tuple(notes))
        except Exception as exc:  # one bad slide never loses the others' pages
            yield ReviewEntry(name, error=image_error_line(image, exc))
