"""Detections in the formats viewers read (`midog export`): GeoJSON for QuPath, XML for
ASAP, and a plain CSV table. Coordinates are level-0 pixels: millimetres divided by the
image's spacing, per axis."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from ..errors import MidogError
from .detections import MITOTIC, NON_MITOTIC
from .reader import Points, read_points
from ..slides.spacing import add_points_parser

FORMATS = {"geojson": ".geojson", "asap": ".xml", "csv": ".csv"}
# Red for mitotic figures, as viewers conventionally draw them; blue for the look-alikes.
COLOURS = {MITOTIC: (230, 25, 75), NON_MITOTIC: (0, 130, 200)}
OTHER_COLOUR = (128, 128, 128)
# Point ids derive from this namespace and the point's place, so that the same result gives
# the same file every time (diffs and caches stay meaningful) yet ids are valid UUIDs.
ID_NAMESPACE = uuid.UUID("5d0c7b0e-2f4e-4c3a-9a43-0c1f2b6d7e11")


def colour(label: str) -> tuple[int, int, int]:
    return COLOURS.get(label, OTHER_COLOUR)


def geojson(points: Points, spacing_mm: tuple[float, float]) -> dict:
    """A FeatureCollection of Point detections as QuPath imports them (File > Import objects)."""
    features = []
    for i, ((x, y), p, label) in enumerate(zip(points.xy_px(spacing_mm), points.probability, points.labels)):
        properties: dict = {"objectType": "detection", "classification": {"name": label, "color": list(colour(label))}}
        if not math.isnan(p):
            properties["measurements"] = {"probability": float(p)}
        features.append(
            {
                "type": "Feature",
                "id": str(uuid.uuid5(ID_NAMESPACE, f"{i}:{x!r}:{y!r}")),
                "geometry": {"type": "Point", "coordinates": [float(x), float(y)]},
                "properties": properties,
            }
        )
    return {"type": "FeatureCollection", "features": features}


def asap_xml(points: Points, spacing_mm: tuple[float, float]) -> str:
    """ASAP_Annotations with one Dot per point, in a group per label. ASAP refuses a file
    whose annotation names a group that is not declared, so every label used is declared."""
    root = ET.Element("ASAP_Annotations")
    annotations = ET.SubElement(root, "Annotations")
    for i, ((x, y), p, label) in enumerate(zip(points.xy_px(spacing_mm), points.probability, points.labels)):
        # ASAP has no measurements: the probability goes in the name, which its list shows.
        name = f"{label} {i + 1}" + ("" if math.isnan(p) else f" (p={p:.3f})")
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


def csv_table(points: Points, spacing_mm: tuple[float, float]) -> str:
    """x_px,y_px,x_mm,y_mm,probability,label; the probability is empty where the result has none."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["x_px", "y_px", "x_mm", "y_mm", "probability", "label"])
    for (xp, yp), (xm, ym), p, label in zip(points.xy_px(spacing_mm), points.xy_mm, points.probability, points.labels):
        writer.writerow([repr(float(xp)), repr(float(yp)), repr(float(xm)), repr(float(ym)), "" if math.isnan(p) else repr(float(p)), label])
    return out.getvalue()


def render(points: Points, spacing_mm: tuple[float, float], fmt: str) -> str:
    if fmt == "geojson":
        return json.dumps(geojson(points, spacing_mm))
    if fmt == "asap":
        return asap_xml(points, spacing_mm)
    if fmt == "csv":
        return csv_table(points, spacing_mm)
    raise ValueError(f"format must be one of {tuple(FORMATS)}, not {fmt!r}")


def export(points: Points, spacing_mm: tuple[float, float], fmt: str, target: str | Path) -> Path:
    from ..atomic import write_text_atomic

    return write_text_atomic(target, render(points, spacing_mm, fmt))


def image_spacing(image: Path | None, mpp: float | None) -> tuple[float, float]:
    """Spacing (x, y) in mm per pixel: the image's own (per axis), or --mpp when given."""
    from ..slides.readers import _check_mpp, open_slide

    if image is None:
        if mpp is None:
            raise MidogError("pass --image (its spacing converts mm to pixels) or --mpp")
        return _check_mpp(Path("--mpp"), mpp, "--mpp")
    with open_slide(image, mpp) as slide:
        return slide.spacing_mm


def _run_export(args: argparse.Namespace) -> int:
    spacing = image_spacing(args.image, args.mpp)
    points = read_points(args.result)
    target = args.output or args.result.with_suffix(FORMATS[args.format])
    if target.resolve() == args.result.resolve():
        raise MidogError(f"{target}: the export would overwrite the result it is made from; choose another -o")
    export(points, spacing, args.format, target)
    print(f"{args.result}: {len(points)} points -> {target}")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = add_points_parser(
        subparsers, "export",
        help="convert a result JSON to GeoJSON (QuPath), ASAP XML or CSV, in level-0 pixels",
        result=("RESULT.json", 'a "Multiple points" result of midog detect or process.py'),
        image_help="the image the result belongs to: its spacing converts mm to pixels",
    )
    p.add_argument("--format", choices=list(FORMATS), required=True)
    p.add_argument("--output", "-o", type=Path, default=None, help="output file (default: the result's name with .geojson, .xml or .csv)")
    p.set_defaults(run=_run_export)
