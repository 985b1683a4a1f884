"""The MIDOG training set as published: `MIDOG.json` plus a folder of TIFFs (docs/reference-algorithm.md#data).

`MIDOG.json` is COCO-like, but its `bbox` is [x1, y1, x2, y2]; plain COCO [x, y, w, h]
is accepted only when asked for (`box_format="xywh"`), because both parse without error
and the wrong choice silently shifts every box. Scanners come from image id ranges;
the synthetic data sets written by `midog synth` carry theirs in `scanners.json`.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import MIDOG_SCANNERS, MIDOG_UNLABELED_SCANNER, REFERENCE, DetectorConfig
from ..errors import MidogError
from ..evaluation.io import load_json

MITOTIC_CATEGORY = 1


@dataclass
class ImageRecord:
    """One training image: where it is, its scanner and its boxes (x1, y1, x2, y2 pixels)."""

    image_id: int
    file_name: str
    path: Path
    width: int
    height: int
    scanner: str
    domain: int  # index of the scanner, the domain classifier's target
    labelled: bool
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    categories: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def mitoses(self) -> np.ndarray:
        """Boxes of category 1, the only class the reference trains on."""
        return self.boxes[self.categories == MITOTIC_CATEGORY]


@dataclass
class Dataset:
    records: list[ImageRecord]
    scanners: list[str]  # domain index -> name
    unlabeled: str | None
    fingerprint: str  # sha256 of the annotation file's bytes

    def by_name(self) -> dict[str, ImageRecord]:
        return {r.file_name: r for r in self.records}


def read_scanner_ranges(path: str | Path) -> tuple[dict[str, tuple[int, int]], str | None]:
    """Scanner id ranges from `scanners.json` (as `midog synth` writes it) or a plain
    `{"name": [first_id, last_id], ...}`; returns (ranges, unlabeled scanner or None)."""
    path = Path(path)
    data = load_json(path)
    unlabeled = None
    if isinstance(data, dict) and "id_ranges" in data:
        unlabeled = data.get("unlabeled")
        data = data["id_ranges"]
    try:
        ranges = {str(k): (int(v[0]), int(v[1])) for k, v in data.items()}
    except (AttributeError, TypeError, ValueError, IndexError):
        raise MidogError(f"{path}: expected scanner id ranges {{\"name\": [first_id, last_id]}}") from None
    return ranges, unlabeled


def default_scanners(annotations: Path) -> tuple[dict[str, tuple[int, int]], str | None]:
    """`scanners.json` beside the annotations when there is one, else the MIDOG 2021 ranges."""
    beside = annotations.parent / "scanners.json"
    if beside.is_file():
        return read_scanner_ranges(beside)
    return dict(MIDOG_SCANNERS), MIDOG_UNLABELED_SCANNER


def load_midog(
    annotations: str | Path,
    images_dir: str | Path | None = None,
    scanners: dict[str, tuple[int, int]] | None = None,
    unlabeled: str | None = None,
    box_format: str = "xyxy",
) -> Dataset:
    """Read `MIDOG.json` (or COCO with `box_format="xywh"`).

    Images whose id lies in no scanner range are dropped. A scanner is unlabelled when it
    is named `unlabeled` (default: the GT450, or what `scanners.json` says); its images
    train only the domain classifier, whatever boxes the file holds for them.
    """
    annotations = Path(annotations)
    if box_format not in ("xyxy", "xywh"):
        raise MidogError(f"box format must be 'xyxy' (MIDOG.json) or 'xywh' (COCO), got {box_format!r}")
    raw = annotations.read_bytes() if annotations.is_file() else b""
    data = load_json(annotations)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise MidogError(f"{annotations}: not COCO-like (needs 'images' and 'annotations' lists)")
    if scanners is None:
        scanners, default_unlabeled = default_scanners(annotations)
        unlabeled = unlabeled if unlabeled is not None else default_unlabeled
    names = list(scanners)
    images_dir = Path(images_dir) if images_dir is not None else annotations.parent

    boxes: dict[int, list[list[float]]] = {}
    cats: dict[int, list[int]] = {}
    for ann in data["annotations"]:
        try:
            image_id, cat = int(ann["image_id"]), int(ann["category_id"])
            b = [float(v) for v in ann["bbox"]]
        except (KeyError, TypeError, ValueError):
            raise MidogError(f"{annotations}: malformed annotation {ann!r}") from None
        if len(b) != 4:
            raise MidogError(f"{annotations}: bbox must have 4 numbers: {ann!r}")
        if box_format == "xywh":
            b = [b[0], b[1], b[0] + b[2], b[1] + b[3]]
        if b[2] <= b[0] or b[3] <= b[1]:
            hint = "" if box_format == "xywh" else " (plain COCO x,y,w,h? pass box_format='xywh')"
            raise MidogError(f"{annotations}: empty box {ann['bbox']} in annotation {ann.get('id')}{hint}")
        boxes.setdefault(image_id, []).append(b)
        cats.setdefault(image_id, []).append(cat)

    records = []
    for img in data["images"]:
        image_id = int(img["id"])
        scanner = next((n for n, (lo, hi) in scanners.items() if lo <= image_id <= hi), None)
        if scanner is None:
            continue
        labelled = scanner != unlabeled
        records.append(
            ImageRecord(
                image_id=image_id,
                file_name=str(img["file_name"]),
                path=images_dir / str(img["file_name"]),
                width=int(img["width"]),
                height=int(img["height"]),
                scanner=scanner,
                domain=names.index(scanner),
                labelled=labelled,
                boxes=np.asarray(boxes.get(image_id, []), np.float32).reshape(-1, 4),
                categories=np.asarray(cats.get(image_id, []), np.int64),
            )
        )
    records.sort(key=lambda r: r.image_id)
    return Dataset(records, names, unlabeled, hashlib.sha256(raw).hexdigest())


def counts(dataset: Dataset) -> dict[str, dict[int, int]]:
    """Annotations per scanner and category id (what the file holds, labelled or not)."""
    out: dict[str, dict[int, int]] = {s: {} for s in dataset.scanners}
    for r in dataset.records:
        for c in r.categories.tolist():
            out[r.scanner][c] = out[r.scanner].get(c, 0) + 1
    return out


# ---------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------

SPLITS = ("train", "valid", "test")


def read_split_file(path: str | Path) -> dict[str, str]:
    """The reference's `train_val_split.txt`: an indented tree whose `train/` and `valid/`
    folders list image files; returns {file name: "train" | "valid"}."""
    path = Path(path)
    if not path.is_file():
        raise MidogError(f"{path}: split file not found")
    out, section = {}, None
    for line in path.read_text().splitlines():
        name = line.strip().rstrip("/")
        if name in ("train", "valid"):
            section = name
        elif name.lower().endswith((".tif", ".tiff")):
            if section is None:
                raise MidogError(f"{path}: {name} is listed outside a train/ or valid/ folder")
            out[name] = section
    if not out:
        raise MidogError(f"{path}: no images listed")
    return out


def seeded_split(
    dataset: Dataset, val_per_scanner: int | None = None, test_per_scanner: int = 0, seed: int = 0
) -> dict[str, str]:
    """Per scanner, a seeded permutation: the first images are test, the next validation,
    the rest training. Default validation share 1/5, the reference's 10 of 50."""
    out = {}
    for k, scanner in enumerate(dataset.scanners):
        names = sorted(r.file_name for r in dataset.records if r.scanner == scanner)
        if not names:
            continue
        n_val = max(1, round(len(names) / 5)) if val_per_scanner is None else val_per_scanner
        if n_val + test_per_scanner >= len(names):
            raise MidogError(
                f"{scanner}: {len(names)} images cannot give {n_val} validation and {test_per_scanner} test images plus training"
            )
        order = np.random.default_rng([seed, k]).permutation(len(names))
        for rank, i in enumerate(order):
            out[names[i]] = "test" if rank < test_per_scanner else "valid" if rank < test_per_scanner + n_val else "train"
    return out


def apply_split(dataset: Dataset, split: dict[str, str]) -> dict[str, list[ImageRecord]]:
    """Records by split; an image the split does not name is left out (and reported)."""
    parts: dict[str, list[ImageRecord]] = {s: [] for s in SPLITS}
    for r in dataset.records:
        part = split.get(r.file_name)
        if part is not None:
            parts[part].append(r)
    return parts


def split_fingerprint(split: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(split.items())).encode()).hexdigest()


# ---------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------


class ImageStore:
    """Reads patches through the detection core's `open_slide` and `read_tile`, keeping the
    last `max_open` images open: MIDOG's 200 regions (~23 GB decoded) do not fit in memory."""

    def __init__(self, max_open: int = 16, config: DetectorConfig = REFERENCE) -> None:
        self.max_open = max_open
        self.config = config  # its mean gives the padding colour (tiles.pad_fill)
        self._open: OrderedDict[Path, Any] = OrderedDict()

    def _slide(self, path: Path) -> Any:
        from ..slides.readers import open_slide

        if path in self._open:
            self._open.move_to_end(path)
            return self._open[path]
        slide = open_slide(path)
        self._open[path] = slide
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)[1].close()
        return slide

    def read(self, record: ImageRecord, x: int, y: int, size: int) -> np.ndarray:
        """(size, size, 3) uint8; parts beyond the image (smaller than a patch) are padded
        as the detector pads its tiles."""
        from ..detector.tiles import read_tile

        return np.ascontiguousarray(read_tile(self._slide(record.path), x, y, self.config, size))

    def close(self) -> None:
        for slide in self._open.values():
            slide.close()
        self._open.clear()
