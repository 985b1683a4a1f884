"""Reading what evaluation needs: predictions, ground truth, scanner domains.

Everything comes out in millimetres, keyed by image file name (e.g. "001.tiff"), the way
the official evaluator keys its ground truth. Malformed input is a `MidogError` that names
the file and what is wrong with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import MIDOG_SCANNERS
from ..detector.detections import NON_MITOTIC
from ..results.reader import point_xyz, load_json, parse_points
from ..errors import MidogError

MIDOG_MITOTIC_CATEGORY = 1


@dataclass(frozen=True)
class Candidates:
    """Every point of one prediction file (the container's detections and its 2022 candidates)."""

    points: np.ndarray  # (n, 3) mm
    probability: np.ndarray  # (n,); 1.0 where a 2021-style file gives none
    named_mitotic: np.ndarray  # (n,) bool; the container's own decision (name != non-mitotic)

    def __len__(self) -> int:
        return len(self.points)

    def detection_mask(self, threshold: float | None) -> np.ndarray:
        """Which points count for F1: probability >= threshold, or the container's names."""
        if threshold is None:
            return self.named_mitotic
        return self.probability >= threshold

    @staticmethod
    def empty() -> "Candidates":
        return Candidates(np.zeros((0, 3)), np.zeros(0), np.zeros(0, dtype=bool))


@dataclass(frozen=True)
class GroundTruth:
    points: dict[str, np.ndarray]  # file name -> (n, 3) mm
    domains: dict[str, str] | None  # file name -> scanner, when the file implies it (MIDOG.json)


def image_stem(name: str) -> str:
    """'001.tiff' -> '001'; prediction files are named after the image's stem."""
    return Path(name).stem


def read_prediction_file(path: str | Path) -> Candidates:
    """One Grand Challenge "Multiple points" file (2021, 2022 or 2025 style)."""
    path = Path(path)
    xyz, prob, names = parse_points(load_json(path, "prediction file"), path)
    if not len(xyz):
        return Candidates.empty()
    # 2021 files list only the detections: each counts as certain.
    prob = np.where(np.isnan(prob), 1.0, prob)
    return Candidates(xyz, prob, np.array([n != NON_MITOTIC for n in names], bool))


def read_predictions(directory: str | Path) -> dict[str, Candidates]:
    """All `<image stem>.json` files of a folder, keyed by stem."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MidogError(f"{directory}: predictions folder not found")
    # `midog batch` writes its report beside the predictions; it is not one of them.
    # Nor are the files midog writes beside each result: its sidecar, its count and the
    # review page's labels.
    files = sorted(f for f in directory.glob("*.json") if f.name != "batch-report.json" and not f.name.endswith((".midog.json", ".count.json", ".labels.json")))
    if not files:
        raise MidogError(f"{directory}: no prediction files (<image stem>.json) in this folder")
    return {f.stem: read_prediction_file(f) for f in files}


def read_spacing_mm(path: str | Path) -> float:
    """Pixel spacing (mm, x) as `midog detect` reads it: the same sources and the same
    plausibility checks, without reading the pixels; refusals name --spacing-mm."""
    from ..slides.limits import Limits
    from ..slides.readers import open_slide

    with open_slide(path, limits=Limits(mpp_option="--spacing-mm")) as slide:
        return slide.spacing_mm[0]


def _find_image(images_dir: Path, name: str) -> Path:
    path = images_dir / name
    if path.is_file():
        return path
    # Tolerate .tif vs .tiff and similar: match on the stem.
    for candidate in sorted(images_dir.glob(image_stem(name) + ".*")):
        if candidate.is_file() and candidate.suffix.lower() in {".tif", ".tiff", ".mha", ".mhd", ".png"}:
            return candidate
    raise MidogError(
        f"{images_dir}: image {name} not found; its pixel spacing is needed to convert MIDOG.json "
        "boxes to mm (point --images at the folder with every labelled image, or pass --spacing-mm)"
    )


def is_midog_json(data: Any) -> bool:
    return isinstance(data, dict) and "images" in data and "annotations" in data


def midog_domains(data: dict, path: str | Path = "MIDOG.json") -> dict[str, str]:
    """Scanner of each MIDOG.json image from its id (config.MIDOG_SCANNERS); a MidogError
    naming `path` when an image entry is not {"id": <integer>, "file_name": <name>}."""
    domains = {}
    try:
        for image in data["images"]:
            image_id, name = int(image["id"]), image["file_name"]
            if not isinstance(name, str):
                raise TypeError(f"file_name {name!r} is not a string")
            for scanner, (first, last) in MIDOG_SCANNERS.items():
                if first <= image_id <= last:
                    domains[name] = scanner
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # every one of these found by fuzzing
        raise MidogError(f"{path}: not a MIDOG.json-style COCO file ({type(exc).__name__}: {exc})") from None
    return domains


def _read_midog_json(
    path: Path, data: dict, spacing_mm: float | None, images_dir: Path | None
) -> dict[str, np.ndarray]:
    try:
        names = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
        # Labels saved by the review page record the spacing their pixels were reviewed at.
        recorded = {str(im["file_name"]): float(im["spacing_mm"][0]) for im in data["images"] if "spacing_mm" in im}
        annotations = [(int(a["image_id"]), int(a["category_id"]), [float(v) for v in a["bbox"]]) for a in data["annotations"]]
    except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:  # OverflowError: an id of Infinity (fuzzing)
        raise MidogError(f"{path}: not a MIDOG.json-style COCO file ({type(exc).__name__}: {exc})") from None
    # An image with no annotation of any kind is unlabelled (the GT450 images), not mitosis-free.
    centres: dict[str, list[list[float]]] = {}
    for image_id, category, bbox in annotations:
        if image_id not in names:
            raise MidogError(f"{path}: an annotation refers to image id {image_id}, which is not listed")
        if len(bbox) != 4:
            raise MidogError(f"{path}: bbox {bbox} of image id {image_id} is not [x1, y1, x2, y2]")
        boxes = centres.setdefault(names[image_id], [])
        if category == MIDOG_MITOTIC_CATEGORY:
            x1, y1, x2, y2 = bbox
            boxes.append([(x1 + x2) / 2, (y1 + y2) / 2])
    if spacing_mm is None and images_dir is None and not set(centres) <= set(recorded):
        raise MidogError(f"{path}: MIDOG.json boxes are in pixels; pass --spacing-mm or --images DIR")
    if images_dir is not None and not images_dir.is_dir():
        raise MidogError(f"{images_dir}: images folder not found")
    out = {}
    for name in sorted(centres):
        if spacing_mm is not None:
            spacing = spacing_mm
        elif name in recorded:
            spacing = recorded[name]
        else:
            spacing = read_spacing_mm(_find_image(images_dir, name))
        px = np.asarray(centres[name], float).reshape(-1, 2)
        # Centre times spacing, no half-pixel offset: the same rule as the detector's output (docs/reference-algorithm.md#thresholds-and-nms).
        out[name] = np.column_stack([px * spacing, np.zeros(len(px))])
    return out


def read_ground_truth(
    path: str | Path, spacing_mm: float | None = None, images_dir: str | Path | None = None
) -> GroundTruth:
    """The evaluator's `{"<file>.tiff": [[x_mm, y_mm, 0], ...]}` or MIDOG.json (pixels).

    MIDOG.json needs a spacing: `spacing_mm` applies to every image (it wins when both are
    given); otherwise an image's `spacing_mm` recorded in the file (labels saved by the review
    page, midog.results.labels), else its own spacing read from its file in `images_dir`.
    Category 1 ("mitotic figure") are the positives; other categories are not, and a labels
    file's `unsure` list is not read.
    """
    path = Path(path)
    data = load_json(path, "ground-truth file")
    if is_midog_json(data):
        if spacing_mm is not None:
            from ..config.checks import check_mpp

            try:
                check_mpp(spacing_mm * 1000)
            except ValueError:
                raise MidogError(f"--spacing-mm {spacing_mm:g} is not a microscope pixel spacing (about 0.00025 mm)") from None
        points = _read_midog_json(path, data, spacing_mm, Path(images_dir) if images_dir else None)
        return GroundTruth(points, midog_domains(data, path))
    if not isinstance(data, dict) or not data:
        raise MidogError(f'{path}: expected {{"<file>.tiff": [[x_mm, y_mm, 0], ...]}} or MIDOG.json')
    points = {}
    for name, pts in data.items():
        if not isinstance(pts, list):
            raise MidogError(f"{path}: entry {name!r} is not a list of points")
        xyz = [point_xyz(p, path, f"{name}[{i}]") for i, p in enumerate(pts)]
        points[name] = np.asarray(xyz, float).reshape(-1, 3)
    return GroundTruth(points, None)


def read_domains(path: str | Path) -> dict[str, str]:
    """`{"<file>.tiff": "<scanner>"}`, or MIDOG.json itself (scanner from the image id)."""
    path = Path(path)
    data = load_json(path, "domains file")
    if is_midog_json(data):
        return midog_domains(data, path)
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise MidogError(f'{path}: expected {{"<file>.tiff": "<scanner>", ...}}')
    return dict(data)
