"""Everything written for one image, from its `Detections`: the challenge JSON (<stem>.json)
and, when asked, the viewer exports (<stem>.geojson, <stem>.xml, <stem>.csv), the count
(<stem>.count.json) and its picture (<stem>.overlay.png). `midog detect` and every batch
runner write through `write_result`, so the same image gives the same bytes whichever ran
it, and `midog export` / `midog count` on the JSON file later give the same bytes again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_json_atomic
from ..detector.detections import Detections
from .count import THUMBNAIL_SIDE, CountOptions, count, describe
from .exports import FORMATS, export

__all__ = ["Extras", "write_result"]


@dataclass(frozen=True)
class Extras:
    """What is written beside each result JSON."""

    exports: tuple[str, ...] = ()
    count: CountOptions | None = None
    overlay: bool = False

    def __bool__(self) -> bool:
        return bool(self.exports) or self.count is not None

    @property
    def thumbnail_side(self) -> int | None:
        """The thumbnail the detector should keep while the image is open: counts need one."""
        return THUMBNAIL_SIDE if self.count is not None else None


def write_result(detections: Detections, target: Path, style: str, extras: Extras | None = None) -> str:
    """Write the result JSON of `style` to `target` and the `extras` beside it; returns a
    note for the summary line (empty without extras)."""
    write_json_atomic(target, detections.to_json(style))
    if not extras:
        return ""
    written = detections.as_written(style)  # what the file says: the extras derive from that
    notes = [str(export(written, fmt, target.with_suffix(FORMATS[fmt]))) for fmt in extras.exports]
    if extras.count is not None:
        counted = count(written, extras.count)
        write_json_atomic(target.with_name(target.stem + ".count.json"), counted.summary)
        if extras.overlay:
            from .overlay import draw_overlay

            draw_overlay(counted, target.with_name(target.stem + ".overlay.png"), heatmap=extras.count.heatmap)
        notes.append(describe(counted))
    return "; ".join(notes)
