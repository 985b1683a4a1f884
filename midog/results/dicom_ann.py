"""`--export dicom-ann`: the detections as a DICOM Microscopy Bulk Simple Annotations object
(made with highdicom), the standard's answer to "where are the detections" that DICOM
viewers overlay on the slide they reference.

One annotation group per class: the mitotic figures, and the candidates below the operating
point as a second group when the result holds them (2022 style). Each point is a POINT in
the series' 3-D frame of reference (slide coordinates in mm, in double precision: float32
would round 50 mm to about 4 um), mapped from level-0 pixels by highdicom's transform of
the full-resolution level: Slim (the Imaging Data Commons viewer) drew only 3-D annotations
until 2024 and draws both now, and only a 3-D object carries the Frame of Reference UID
that ties it to the slide. The probability is a measurement of each point (absent in a
2021-style result, which records none). The object joins the source series' study and frame
of reference, with new
UIDs of its own derived from the result (the same result gives the same UIDs, so exporting
it again replaces rather than duplicates it in an archive), and names the algorithm: midog,
its version, the weights' SHA-256 and the operating point.

Only DICOM sources: for a TIFF or vendor slide there is no study, patient or frame of
reference to join, and an annotation object referencing an image no archive holds is
overlaid by no viewer; the export refuses with the way out (convert the slide to DICOM).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from ..detector.detections import MITOTIC, NON_MITOTIC, Detections
from ..errors import ImageError, MidogError

__all__ = ["SUFFIX", "annotations", "write_annotations"]

SUFFIX = ".dcm"
MANUFACTURER = "midog"
GROUP_DESCRIPTIONS = {
    MITOTIC: "mitotic figures: candidates scoring above the operating point",
    NON_MITOTIC: "candidates below the operating point (look-alikes, not counted)",
}


def points(detections: Detections) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three things this export takes from a result: (N, 2) level-0 pixel coordinates,
    the scores (NaN where the result records none) and which points are mitotic figures."""
    # Millimetres over the spacing, per axis, as every pixel export computes them.
    xy = np.asarray(detections.xy_mm, np.float64).reshape(-1, 2) / np.asarray(detections.spacing_mm, np.float64)
    return xy, np.asarray(detections.scores, np.float64), np.asarray(detections.mitotic, bool)


def _source(detections: Detections) -> Any:
    """The header of the source series' full-resolution level, which the object references."""
    from ..slides.dicom import is_dicom, read_series

    image = detections.image
    if image is None:
        raise MidogError("--export dicom-ann needs the DICOM slide the result was made on: pass it with --image")
    image = Path(image)
    if not is_dicom(image):
        raise ImageError(image, "--export dicom-ann writes annotations of a DICOM slide, and this is not one "
                         "(no study or frame of reference to join); convert the slide to DICOM (e.g. with wsidicomizer) and detect on that")
    return read_series(image).base.headers[0]


def _uid(identity: str, what: str) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[identity, what]))


def annotations(detections: Detections, identity: str = "", weights_sha256: str | None = None) -> Any:
    """The annotation object (a highdicom dataset) of `detections` on their DICOM slide;
    `identity` (the image and result, as `exports.identity` gives it) seeds its UIDs."""
    import highdicom as hd
    from highdicom.sr.coding import CodedConcept
    from pydicom.sr.codedict import codes

    from .. import __version__

    source = _source(detections)
    xy, scores, mitotic = points(detections)
    to_slide = hd.spatial.ImageToReferenceTransformer.for_image(source, for_total_pixel_matrix=True)
    xyz = to_slide(xy.astype(np.float64)) if len(xy) else np.zeros((0, 3))
    parameters = {"operating point": f"{float(detections.threshold)!r}"}
    if weights_sha256:
        parameters["weights SHA-256"] = weights_sha256
    algorithm = hd.AlgorithmIdentificationSequence(name="midog", family=codes.cid7162.ArtificialIntelligence,
                                                   version=__version__, parameters=parameters)
    probability = codes.DCM.Probability
    groups = []
    for label, keep in ((MITOTIC, mitotic), (NON_MITOTIC, ~mitotic)):
        if not keep.any():
            continue
        measured = scores[keep]
        measurements = None
        if not np.isnan(measured).all():
            measurements = [hd.ann.Measurements(name=probability, values=measured.astype(np.float32),
                                                unit=CodedConcept("1", "UCUM", "no units"))]
        groups.append(hd.ann.AnnotationGroup(
            number=len(groups) + 1,
            uid=_uid(identity, f"group {label}"),
            label=label,
            annotated_property_category=codes.SCT.AnatomicalStructure,
            annotated_property_type=codes.SCT.Cell,
            graphic_type=hd.ann.GraphicTypeValues.POINT,
            graphic_data=[p.reshape(1, 3) for p in xyz[keep].astype(np.float64)],
            algorithm_type=hd.ann.AnnotationGroupGenerationTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            measurements=measurements,
            description=GROUP_DESCRIPTIONS[label],
        ))
    return hd.ann.MicroscopyBulkSimpleAnnotations(
        source_images=[source],
        annotation_coordinate_type=hd.ann.AnnotationCoordinateTypeValues.SCOORD3D,
        annotation_groups=groups,
        series_instance_uid=_uid(identity, "series"),
        series_number=9001,
        sop_instance_uid=_uid(identity, "instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="midog mitotic figure detector",
        software_versions=__version__,
        device_serial_number="none",
        content_description="mitotic figures found by midog",
        content_label="MITOSES",
    )


def write_annotations(detections: Detections, target: str | Path, identity: str = "", weights_sha256: str | None = None) -> Path | None:
    """Write the annotation object to `target` atomically; returns `target`. A result without
    points has nothing to overlay (an object holds at least one annotation): nothing is
    written, an earlier run's object there is removed, and None is returned."""
    if len(detections) == 0:
        _source(detections)  # a TIFF source is refused all the same
        Path(target).unlink(missing_ok=True)
        return None
    dataset = annotations(detections, identity, weights_sha256)
    with atomic_path(target) as tmp:
        dataset.save_as(tmp, enforce_file_format=True)
    return Path(target)
