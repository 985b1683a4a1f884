"""Detections in the formats viewers read: GeoJSON for QuPath, XML for ASAP, and a plain
CSV table. Coordinates are level-0 pixels: the result's millimetres divided by the image's
spacing, per axis, so that an export made at detection time and one made later from the
result file are the same bytes."""

from __future__ import annotations

import csv
import io
import json
import math
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..detector.detections import MITOTIC, NON_MITOTIC, Detections

FORMATS = {"geojson": ".geojson", "asap": ".xml", "csv": ".csv"}
# Red for mitotic figures, as viewers conventionally draw them; blue for the look-alikes.
COLOURS = {MITOTIC: (230, 25, 75), NON_MITOTIC: (0, 130, 200)}
OTHER_COLOUR = (128, 128, 128)
# Point ids derive from this namespace and the point's place, so that the same result gives
# the same file every time (diffs and caches stay meaningful) yet ids are valid UUIDs.
ID_NAMESPACE = uuid.UUID("5d0c7b0e-2f4e-4c3a-9a43-0c1f2b6d7e11")


def colour(label: str) -> tuple[int, int, int]:
    return COLOURS.get(label, OTHER_COLOUR)


def pixels(detections: Detections) -> np.ndarray:
    """(N, 2) level-0 pixel coordinates of the points, from their millimetres."""
    return detections.xy_mm / np.asarray(detections.spacing_mm, float)


def geojson(detections: Detections) -> dict:
    """A FeatureCollection of Point detections as QuPath imports them (File > Import objects)."""
    features = []
    for i, ((x, y), p, label) in enumerate(zip(pixels(detections), detections.scores.tolist(), detections.labels())):
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


def asap_xml(detections: Detections) -> str:
    """ASAP_Annotations with one Dot per point, in a group per label. ASAP refuses a file
    whose annotation names a group that is not declared, so every label used is declared."""
    root = ET.Element("ASAP_Annotations")
    annotations = ET.SubElement(root, "Annotations")
    for i, ((x, y), p, label) in enumerate(zip(pixels(detections), detections.scores.tolist(), detections.labels())):
        # ASAP has no measurements: the probability goes in the name, which its list shows.
        name = f"{label} {i + 1}" + ("" if math.isnan(p) else f" (p={p:.3f})")
        dot = ET.SubElement(annotations, "Annotation", Name=name, Type="Dot", PartOfGroup=label, Color=_hex(colour(label)))
        coords = ET.SubElement(dot, "Coordinates")
        ET.SubElement(coords, "Coordinate", Order="0", X=repr(float(x)), Y=repr(float(y)))
    groups = ET.SubElement(root, "AnnotationGroups")
    for label in dict.fromkeys(detections.labels()):
        group = ET.SubElement(groups, "Group", Name=label, PartOfGroup="None", Color=_hex(colour(label)))
        ET.SubElement(group, "Attributes")
    ET.indent(root)
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def csv_table(detections: Detections) -> str:
    """x_px,y_px,x_mm,y_mm,probability,label; the probability is empty where the result has none."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["x_px", "y_px", "x_mm", "y_mm", "probability", "label"])
    for (xp, yp), (xm, ym), p, label in zip(pixels(detections), detections.xy_mm, detections.scores.tolist(), detections.labels()):
        writer.writerow([repr(float(xp)), repr(float(yp)), repr(float(xm)), repr(float(ym)), "" if math.isnan(p) else repr(float(p)), label])
    return out.getvalue()


def render(detections: Detections, fmt: str) -> str:
    if fmt == "geojson":
        return json.dumps(geojson(detections))
    if fmt == "asap":
        return asap_xml(detections)
    if fmt == "csv":
        return csv_table(detections)
    raise ValueError(f"format must be one of {tuple(FORMATS)}, not {fmt!r}")


def export(detections: Detections, fmt: str, target: str | Path) -> Path:
    from ..atomic import write_text_atomic

    return write_text_atomic(target, render(detections, fmt))
