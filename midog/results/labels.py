"""Labels from review: what a pathologist decided on the review page, in the MIDOG.json layout.

The review page (`midog review`) saves `<image stem>.labels.json`; `midog labels merge` joins
several into one cohort file. The layout is MIDOG.json's, so that `midog evaluate
--ground-truth`, `midog train` and `midog calibrate` read it as they read the challenge's own
file:

- `images`: id, file_name, width, height, and beside them the pixel spacing the points were
  reviewed at (`spacing_mm`, [x, y]), which the ground-truth reader uses to convert pixels to mm;
- `categories`: 1 "mitotic figure", 2 "not mitotic figure" (MIDOG's hard negatives);
- `annotations`: a 50 px box [x1, y1, x2, y2] centred on each decided or added point, with
  where it came from (`source`: "candidate" or "added") and the candidate's probability;
- `unsure`: points marked unsure, in the same form, kept out of `annotations` so that no
  reader counts them either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import MidogError
from .reader import load_json

BOX_PX = 50  # the box MIDOG.json draws around each figure
MITOTIC, NOT_MITOTIC = 1, 2
CATEGORIES = [{"id": MITOTIC, "name": "mitotic figure"}, {"id": NOT_MITOTIC, "name": "not mitotic figure"}]
FORMAT = "midog review labels"  # `format` of a labels file, for telling it from MIDOG.json


def _check(data: Any, path: Path) -> dict[str, Any]:
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise MidogError(f"{path}: not a labels file (needs 'images' and 'annotations' lists, as the review page saves them)")
    ids = set()
    for image in data["images"]:
        try:
            ids.add(int(image["id"]))
            str(image["file_name"]), int(image["width"]), int(image["height"])
        except (KeyError, TypeError, ValueError):
            raise MidogError(f"{path}: image entry {image!r} lacks id, file_name, width or height") from None
    for entry in [*data["annotations"], *data.get("unsure", [])]:
        try:
            image_id, box = int(entry["image_id"]), [float(v) for v in entry["bbox"]]
        except (KeyError, TypeError, ValueError):
            raise MidogError(f"{path}: malformed annotation {entry!r}") from None
        if image_id not in ids or len(box) != 4:
            raise MidogError(f"{path}: annotation {entry!r} names no listed image or has no [x1, y1, x2, y2] box")
    return data


def read_labels(path: str | Path) -> dict[str, Any]:
    """A labels file, checked enough that merging it cannot produce a broken file."""
    path = Path(path)
    return _check(load_json(path, "labels file"), path)


def merge_labels(paths: list[Path]) -> dict[str, Any]:
    """One file of every image of `paths`: image and annotation ids renumbered from 1 in
    the order given. The same image file twice is refused: which review would win?"""
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    unsure: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for path in paths:
        data = read_labels(path)
        renumber = {}
        for image in data["images"]:
            name = str(image["file_name"])
            if name in seen:
                raise MidogError(f"{path}: image {name} is also in {seen[name]}; merge one review per image")
            seen[name] = path
            renumber[int(image["id"])] = len(images) + 1
            images.append({**image, "id": len(images) + 1})
        for entry in data["annotations"]:
            annotations.append({**entry, "id": len(annotations) + 1, "image_id": renumber[int(entry["image_id"])]})
        for entry in data.get("unsure", []):
            unsure.append({**entry, "image_id": renumber[int(entry["image_id"])]})
    return {"format": FORMAT, "images": images, "categories": CATEGORIES, "annotations": annotations, "unsure": unsure}
