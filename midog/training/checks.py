"""The data check before training: every image the split uses exists, is readable and has
the size its annotations give, and the split file names only known images. Problems come
back as one summary (exit 2) before the model is built, not as a failure in epoch 1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UsageError, image_error_line


def _summary(problem: str, items: list[str], total: int, where: str = "") -> str:
    return f"{len(items)} of {total} {problem}{where}; first: {items[0]}"


def check_training_data(cfg: Any) -> None:
    """Raises UsageError with one summary line per kind of problem; `cfg` is a DataConfig."""
    from ..slides.readers import check_file, open_slide
    from .data import load_midog, read_scanner_ranges, read_split_file

    ranges, unlabeled = read_scanner_ranges(cfg.scanners_file) if cfg.scanners_file else (None, None)
    data = load_midog(cfg.annotations, cfg.images_dir, ranges, cfg.unlabeled or unlabeled, cfg.box_format)
    folder = Path(cfg.images_dir) if cfg.images_dir else Path(cfg.annotations).parent
    problems = []
    if cfg.split_file:
        split = read_split_file(cfg.split_file)
        known = {r.file_name for r in data.records}
        unknown = sorted(name for name in split if name not in known)
        if unknown:
            problems.append(_summary("images named in the split file are not in the annotations", unknown, len(split), f" ({cfg.split_file})"))
        records = [r for r in data.records if r.file_name in split]
    else:
        records = data.records
    missing, unreadable, wrong_size = [], [], []
    for r in records:
        if not r.path.exists():
            missing.append(r.file_name)
            continue
        try:
            check_file(r.path)
            with open_slide(r.path) as slide:
                size = (slide.width, slide.height)
        except Exception as exc:  # any reason the training loop could not read it
            unreadable.append(image_error_line(r.file_name, exc))
            continue
        if size != (r.width, r.height):
            wrong_size.append(f"{r.file_name} is {size[0]} x {size[1]} px, the annotations say {r.width} x {r.height}")
    if missing:
        problems.append(_summary("images not found", missing, len(records), f" under {folder}"))
    if unreadable:
        problems.append(_summary("images unreadable", unreadable, len(records)))
    if wrong_size:
        problems.append(_summary("images differ in size from the annotations", wrong_size, len(records)))
    if problems:
        raise UsageError("training data check failed: " + "; ".join(problems))
