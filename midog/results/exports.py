"""Detections in the formats viewers read (`midog export`): GeoJSON for QuPath, tab-separated
points for QuPath's Counting tool, XML for ASAP, and a plain CSV table.

Coordinates are pixels: millimetres divided by the spacing the result was made at, per axis
(midog.results.sidecar). The CSV and ASAP XML hold level-0 pixels. QuPath crops a slide it
reads through OpenSlide to the slide's non-empty region (OpenSlide's bounds: MRXS, SCN and
other formats), so QuPath's (0, 0) is that region's corner: the QuPath exports subtract its
offset unless `--qupath-bounds off`.

QuPath objects. Mitotic figures are points to count, and point *annotations* with a
classification are what QuPath's Counting tool makes and what mitosis datasets exchange;
QuPath also draws them at every zoom. A detection with a zero-size geometry is drawn only
when zoomed in (below about 4x zoom-out QuPath paints detections with a width only, and on
large slides from a downsampled overlay), so `--qupath-objects detection` writes each one as
a small circle of a detection's size, which has an area and is drawn at every zoom. The
probability is a measurement either way. QuPath reads ":" in a class name as a sub-class
separator and refuses it inside a name, so a class name is written with " - " in its place
(the original stays in the object's name).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MidogError
from .detections import MITOTIC, NON_MITOTIC
from .reader import Points, read_points
from ..slides.spacing import add_points_parser

FORMATS = {"geojson": ".geojson", "qupath-points": ".points.tsv", "asap": ".xml", "csv": ".csv"}
QUPATH_FORMATS = ("geojson", "qupath-points")  # the formats in QuPath's pixels
QUPATH_OBJECTS = ("annotation", "detection")
QUPATH_BOUNDS = ("auto", "off")
# Red for mitotic figures, as viewers conventionally draw them; blue for the look-alikes.
COLOURS = {MITOTIC: (230, 25, 75), NON_MITOTIC: (0, 130, 200)}
OTHER_COLOUR = (128, 128, 128)
# Ids are UUIDs derived from this namespace and the image, the result and the point, so the
# same export gives the same file every time, and two results of one image never share one.
ID_NAMESPACE = uuid.UUID("5d0c7b0e-2f4e-4c3a-9a43-0c1f2b6d7e11")
# A detection's circle: MIDOG's labels are 50 px boxes at 0.25 um/px, about one cell.
DETECTION_DIAMETER_MM = 0.0125
CIRCLE_VERTICES = 24


@dataclass(frozen=True)
class Placement:
    """How mm become a viewer's pixels: the spacing, and the offset QuPath's pixels start at."""

    spacing_mm: tuple[float, float]
    qupath_offset_px: tuple[float, float] = (0.0, 0.0)
    identity: str = ""  # the image and result the ids derive from (`identity`)

    def level0_px(self, points: Points) -> np.ndarray:
        return points.xy_px(self.spacing_mm)

    def qupath_px(self, points: Points) -> np.ndarray:
        return points.xy_px(self.spacing_mm) - np.asarray(self.qupath_offset_px, float)


def identity(result: Path, image_name: str | None) -> str:
    """What the ids of one export derive from: the image's name and the result file's bytes."""
    return f"{image_name or ''}\n{hashlib.sha256(result.read_bytes()).hexdigest()}"


def colour(label: str) -> tuple[int, int, int]:
    return COLOURS.get(label, OTHER_COLOUR)


def qupath_class(label: str) -> str:
    """The class name QuPath keeps as one class: no ":" (its sub-class separator)."""
    return re.sub(r"\s*:\s*", " - ", label).strip() or "unnamed"


def _point_id(place: Placement, i: int, xy_mm: np.ndarray, p: float, label: str) -> str:
    # Python floats' repr, not numpy's printed text: the same value on every numpy version.
    key = "\n".join([place.identity, str(i), repr(float(xy_mm[0])), repr(float(xy_mm[1])), repr(float(p)), label])
    return str(uuid.uuid5(ID_NAMESPACE, key))


def _circle(x: float, y: float, rx: float, ry: float) -> list[list[float]]:
    angles = np.linspace(0, 2 * math.pi, CIRCLE_VERTICES, endpoint=False)
    ring = [[float(x + rx * math.cos(a)), float(y + ry * math.sin(a))] for a in angles]
    return ring + [ring[0]]  # GeoJSON rings are closed


def geojson(points: Points, place: Placement, objects: str = "annotation") -> dict:
    """A FeatureCollection as QuPath imports it: point annotations, or circular detections."""
    if objects not in QUPATH_OBJECTS:
        raise ValueError(f"objects must be one of {QUPATH_OBJECTS}, not {objects!r}")
    rx, ry = (DETECTION_DIAMETER_MM / 2 / s for s in place.spacing_mm)
    features = []
    for i, ((x, y), xy_mm, p, label) in enumerate(zip(place.qupath_px(points), points.xy_mm, points.probability, points.labels)):
        name = qupath_class(label)
        properties: dict = {"objectType": objects, "classification": {"name": name, "color": list(colour(label))}}
        if name != label:
            properties["name"] = label
        if not math.isnan(p):
            properties["measurements"] = {"probability": float(p)}
        if objects == "annotation":
            geometry = {"type": "Point", "coordinates": [float(x), float(y)]}
        else:
            geometry = {"type": "Polygon", "coordinates": [_circle(float(x), float(y), rx, ry)]}
        features.append({"type": "Feature", "id": _point_id(place, i, xy_mm, p, label), "geometry": geometry, "properties": properties})
    return {"type": "FeatureCollection", "features": features}


def qupath_points(points: Points, place: Placement) -> str:
    """The Counting tool's "Load points" file: a header, then x, y, class and colour per
    point, tab-separated. QuPath makes one points annotation per class and colour."""
    lines = ["x\ty\tclass\tcolor"]
    for (x, y), label in zip(place.qupath_px(points), points.labels):
        r, g, b = colour(label)
        packed = (255 << 24 | r << 16 | g << 8 | b) - (1 << 32)  # Java's signed ARGB int, as QuPath writes it
        lines.append(f"{float(x)!r}\t{float(y)!r}\t{qupath_class(label)}\t{packed}")
    return "\n".join(lines) + "\n"


def asap_xml(points: Points, place: Placement) -> str:
    """ASAP_Annotations with one Dot per point, in a group per label. ASAP refuses a file
    whose annotation names a group that is not declared, so every label used is declared."""
    root = ET.Element("ASAP_Annotations")
    annotations = ET.SubElement(root, "Annotations")
    for i, ((x, y), p, label) in enumerate(zip(place.level0_px(points), points.probability, points.labels)):
        # ASAP has no measurements: the probability goes in the name, which its list shows,
        # at full precision (the shortest text that reads back as the same number).
        name = f"{label} {i + 1}" + ("" if math.isnan(p) else f" (p={float(p)!r})")
        dot = ET.SubElement(annotations, "Annotation", Name=name, Type="Dot", PartOfGroup=label, Color=_hex(colour(label)))
        coords = ET.SubElement(dot, "Coordinates")
        ET.SubElement(coords, "Coordinate", Order="0", X=repr(float(x)), Y=repr(float(y)))
    groups = ET.SubElement(root, "AnnotationGroups")
    for label in dict.fromkeys(points.labels):
        group = ET.SubElement(groups, "Group", Name=label, PartOfGroup="None", Color=_hex(colour(label)))
        ET.SubElement(group, "Attributes")
    ET.indent(root)
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def csv_table(points: Points, place: Placement) -> str:
    """x_px,y_px,x_mm,y_mm,probability,label in level-0 pixels; the probability is empty
    where the result has none."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["x_px", "y_px", "x_mm", "y_mm", "probability", "label"])
    for (xp, yp), (xm, ym), p, label in zip(place.level0_px(points), points.xy_mm, points.probability, points.labels):
        writer.writerow([repr(float(xp)), repr(float(yp)), repr(float(xm)), repr(float(ym)), "" if math.isnan(p) else repr(float(p)), label])
    return out.getvalue()


def render(points: Points, place: Placement, fmt: str, objects: str = "annotation") -> str:
    if fmt == "geojson":
        return json.dumps(geojson(points, place, objects))
    if fmt == "qupath-points":
        return qupath_points(points, place)
    if fmt == "asap":
        return asap_xml(points, place)
    if fmt == "csv":
        return csv_table(points, place)
    raise ValueError(f"format must be one of {tuple(FORMATS)}, not {fmt!r}")


def export(points: Points, place: Placement, fmt: str, target: str | Path, objects: str = "annotation") -> Path:
    from ..atomic import write_text_atomic

    return write_text_atomic(target, render(points, place, fmt, objects))


def placement(spacing_mm: tuple[float, float], offset_px: tuple[int, int] | None, bounds: str, ident: str) -> Placement:
    """The Placement of a result: `bounds` "auto" moves QuPath's pixels by the slide's
    bounds offset where the slide reader reports one (QuPath then crops), "off" never."""
    if bounds not in QUPATH_BOUNDS:
        raise ValueError(f"bounds must be one of {QUPATH_BOUNDS}, not {bounds!r}")
    shift = (float(offset_px[0]), float(offset_px[1])) if bounds == "auto" and offset_px else (0.0, 0.0)
    return Placement(spacing_mm, shift, ident)


def _run_export(args: argparse.Namespace) -> int:
    import logging

    from .sidecar import resolve_spacing

    if args.image is None and args.mpp is None and not _has_sidecar(args.result):
        raise MidogError("pass --image (its spacing converts mm to pixels) or --mpp")
    points = read_points(args.result)
    resolved = resolve_spacing(args.result, args.image, args.mpp)
    for note in resolved.notes:
        logging.getLogger(__name__).warning("midog export: warning: %s", note)
    image_name = resolved.info.image if resolved.info and resolved.info.image else (args.image.name if args.image else None)
    place = placement(resolved.spacing_mm, resolved.offset_px, args.qupath_bounds, identity(args.result, image_name))
    target = args.output or args.result.with_suffix(FORMATS[args.format])
    if target.resolve() == args.result.resolve():
        raise MidogError(f"{target}: the export would overwrite the result it is made from; choose another -o")
    export(points, place, args.format, target, args.qupath_objects)
    shifted = f", shifted by QuPath's bounds offset {place.qupath_offset_px}" if args.format in QUPATH_FORMATS and any(place.qupath_offset_px) else ""
    print(f"{args.result}: {len(points)} points -> {target}{shifted}")
    return 0


def _has_sidecar(result: Path) -> bool:
    from .sidecar import sidecar_path

    return sidecar_path(result).is_file()


def add_qupath_args(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--qupath-objects and --qupath-bounds, for `midog export` and `midog detect --export`."""
    p.add_argument("--qupath-objects", choices=QUPATH_OBJECTS, default="annotation",
                   help="GeoJSON: point annotations (default; drawn at every zoom, what the Counting tool uses) "
                   "or detections as small circles")
    p.add_argument("--qupath-bounds", choices=QUPATH_BOUNDS, default="auto",
                   help="QuPath exports: subtract the slide's non-empty-region offset where QuPath crops to it (auto, default) or never (off)")


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = add_points_parser(
        subparsers, "export",
        help="convert a result JSON to GeoJSON or Counting-tool points (QuPath), ASAP XML or CSV, in pixels",
        result=("RESULT.json", 'a "Multiple points" result of midog detect or process.py'),
        image_help="the image the result belongs to: its size and offset are checked against the result's <stem>.midog.json, "
        "or its spacing converts mm to pixels when there is none",
    )
    p.add_argument("--format", choices=list(FORMATS), required=True,
                   help="geojson: QuPath objects; qupath-points: tab-separated points for QuPath's Counting tool; asap: ASAP XML; csv: a table")
    p.add_argument("--output", "-o", type=Path, default=None, help="output file (default: the result's name with .geojson, .points.tsv, .xml or .csv)")
    add_qupath_args(p)
    p.set_defaults(run=_run_export)
