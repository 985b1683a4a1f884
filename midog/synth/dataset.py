"""The synthetic data set on disk, in the MIDOG 2021 layout: TIFFs, MIDOG.json,
unlabeled_annotations.json, ground_truth.json, domains.json and scanners.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_text_atomic
from .content import BORDER_MARGIN, CATEGORIES, CATEGORY_MITOSIS, SynthObject, render_content
from .profiles import DEFAULT_PROFILES, scanner_set
from .scanners import SCANNERS, ScannerProfile, _scanner_key, apply_scanner, write_tiff

INFO = {
    "description": "Synthetic MIDOG-style multi-scanner data set (midog synth)",
    "version": "1.0",
    "year": 2021,
    "contributor": "midog.synth",
    "date_created": "2021/04/01",  # fixed: a date from the clock would break byte-identity
}
LICENSES = [{"url": "https://opensource.org/licenses/MIT", "id": 1, "name": "MIT"}]


def synth_image(
    seed: int, scanner: ScannerProfile | int, width: int, height: int, *, content_key: tuple[int, ...] = ()
) -> tuple[np.ndarray, list[SynthObject]]:
    """One synthetic image and its labelled objects.

    The content depends only on (seed, content_key), not on the scanner, so the same
    tissue can be rendered by every scanner for paired domain-shift experiments.
    """
    profile = SCANNERS[scanner] if isinstance(scanner, int) else scanner
    content_ss = np.random.SeedSequence(seed, spawn_key=(0, *content_key))
    scan_ss = np.random.SeedSequence(seed, spawn_key=(1, *content_key, _scanner_key(profile)))
    hem, eos, objects = render_content(np.random.default_rng(content_ss), width, height)
    rgb = apply_scanner(hem, eos, profile, np.random.default_rng(scan_ss))
    return rgb, objects


def _coco(images: list[dict], annotations: list[dict]) -> dict[str, Any]:
    return {
        "info": dict(INFO),
        "licenses": [dict(x) for x in LICENSES],
        "images": images,
        "categories": [dict(c) for c in CATEGORIES],
        "annotations": annotations,
    }


def _write_json(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1) + "\n")


def make_dataset(
    out_dir: str | Path,
    *,
    seed: int = 0,
    images_per_scanner: int = 4,
    size: tuple[int, int] = (1024, 1024),
    workers: int | None = None,
    profiles: str = DEFAULT_PROFILES,
) -> dict[str, Any]:
    """Write a synthetic MIDOG-layout data set to `out_dir` and return a summary.

    size is (width, height). Scanner k (0-based) gets image ids
    k * images_per_scanner + 1 ... (k + 1) * images_per_scanner, as the real scanners
    get contiguous id ranges. Files written: the TIFFs, MIDOG.json (labels of the
    first three scanners), unlabeled_annotations.json (the last scanner's labels),
    ground_truth.json (official evaluator form, mitotic figures of all scanners, mm),
    domains.json and scanners.json.

    workers: images rendered at once in threads (default: up to 2, by CPU count). The
    output does not depend on it: every image has its own random stream.

    profiles: the scanner-profile set (`profiles.SCANNER_SETS`). A set with unseen
    scanners writes their images after the training scanners' (ids continuing), lists
    them in unseen_annotations.json, ground_truth.json and domains.json, and never in
    MIDOG.json, so training cannot see them.
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    from ..errors import MidogError

    width, height = (int(v) for v in size)
    if seed < 0:
        raise MidogError(f"seed must be >= 0, got {seed}")
    if images_per_scanner < 1:
        raise MidogError(f"images per scanner must be >= 1, got {images_per_scanner}")
    if width < 2 * BORDER_MARGIN + 16 or height < 2 * BORDER_MARGIN + 16:
        raise MidogError(f"image size {width}x{height} is too small (min {2 * BORDER_MARGIN + 16} px a side)")
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if workers < 1:
        raise MidogError(f"workers must be >= 1, got {workers}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    chosen = scanner_set(profiles)
    scanners = chosen.all
    unlabeled_name = chosen.unlabeled
    unseen_names = {s.name for s in chosen.unseen}
    jobs = [(k, i) for k in range(len(scanners)) for i in range(images_per_scanner)]

    def render(job: tuple[int, int]) -> list[SynthObject]:
        k, i = job
        rgb, objects = synth_image(seed, scanners[k], width, height, content_key=(k, i))
        write_tiff(out / f"{k * images_per_scanner + i + 1:03d}.tiff", rgb, scanners[k])
        return objects

    # Threads, not processes: the big numpy/scipy/zlib calls release the GIL, and
    # threads start instantly and are safe inside callers' own process pools.
    if workers == 1:
        rendered = [render(j) for j in jobs]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            rendered = list(pool.map(render, jobs))
    objects_of = dict(zip(jobs, rendered))

    images: list[dict] = []
    labelled: list[dict] = []
    unlabeled: list[dict] = []
    unlabeled_images: list[dict] = []
    unseen: list[dict] = []
    unseen_images: list[dict] = []
    ground_truth: dict[str, list[list[float]]] = {}
    domains: dict[str, str] = {}
    scanners_info: dict[str, dict[str, Any]] = {}
    ann_id = 0
    paths: list[str] = []
    for k, scanner in enumerate(scanners):
        first = k * images_per_scanner + 1
        last = (k + 1) * images_per_scanner
        counts = {c["name"]: 0 for c in CATEGORIES}
        for i in range(images_per_scanner):
            image_id = first + i
            name = f"{image_id:03d}.tiff"
            objects = objects_of[(k, i)]
            paths.append(str(out / name))
            entry = {"license": 1, "file_name": name, "id": image_id, "width": width, "height": height}
            is_unseen = scanner.name in unseen_names
            (unseen_images if is_unseen else images).append(entry)
            domains[name] = scanner.name
            points = []
            for obj in objects:
                ann_id += 1
                ann = {"bbox": obj.bbox, "category_id": obj.category_id, "image_id": image_id, "id": ann_id}
                (unseen if is_unseen else unlabeled if scanner.name == unlabeled_name else labelled).append(ann)
                counts[CATEGORIES[obj.category_id - 1]["name"]] += 1
                if obj.category_id == CATEGORY_MITOSIS:
                    points.append([obj.x * scanner.spacing_mm, obj.y * scanner.spacing_mm, 0])
            ground_truth[name] = points
            if scanner.name == unlabeled_name:
                unlabeled_images.append(dict(entry))
        scanners_info[scanner.name] = {
            "id_range": [first, last],
            "spacing_mm": scanner.spacing_mm,
            "labelled": scanner.name != unlabeled_name,
            "counts": counts,
            **({"unseen": True} if scanner.name in unseen_names else {}),
        }

    files = {
        "midog_json": out / "MIDOG.json",
        "unlabeled_annotations_json": out / "unlabeled_annotations.json",
        "ground_truth_json": out / "ground_truth.json",
        "domains_json": out / "domains.json",
        "scanners_json": out / "scanners.json",
    }
    _write_json(files["midog_json"], _coco(images, labelled))
    _write_json(files["unlabeled_annotations_json"], _coco(unlabeled_images, unlabeled))
    _write_json(files["ground_truth_json"], ground_truth)
    _write_json(files["domains_json"], domains)
    training = {n: v for n, v in scanners_info.items() if n not in unseen_names}
    description: dict[str, Any] = {
        # Training reads these keys: only the training scanners, so unseen ones stay out.
        "scanners": [s.name for s in chosen.training],
        "unlabeled": unlabeled_name,
        "id_ranges": {n: v["id_range"] for n, v in training.items()},
        "spacing_mm": {n: v["spacing_mm"] for n, v in training.items()},
        "seed": seed,
        "size": [width, height],
    }
    if chosen.name != DEFAULT_PROFILES:  # absent for the default: its files stay byte-identical
        description["profiles"] = chosen.name
    if chosen.unseen:
        files["unseen_annotations_json"] = out / "unseen_annotations.json"
        _write_json(files["unseen_annotations_json"], _coco(unseen_images, unseen))
        description["unseen"] = {n: v["id_range"] for n, v in scanners_info.items() if n in unseen_names}
        description["unseen_spacing_mm"] = {n: v["spacing_mm"] for n, v in scanners_info.items() if n in unseen_names}
    _write_json(files["scanners_json"], description)
    totals = {c["name"]: sum(v["counts"][c["name"]] for v in scanners_info.values()) for c in CATEGORIES}
    return {
        "out_dir": str(out),
        "images": paths,
        **{k: str(v) for k, v in files.items()},
        "scanners": scanners_info,
        "counts": {"images": len(images) + len(unseen_images), **totals},
    }
