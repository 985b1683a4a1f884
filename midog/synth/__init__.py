"""Synthetic multi-scanner data in exactly the MIDOG 2021 layout.

Tests, the demo and training benchmarks need MIDOG-shaped data without the 200 real
slides (licence, 30 GB). `make_dataset` writes `001.tiff`... plus `MIDOG.json` in the
real file's format, for four synthetic "scanners" that see statistically identical
tissue but render it with different stain colours, tone, blur and noise, so the domain
shift is one of colour and image quality, as between the real scanners.

Each image is drawn in two steps:

1. Content, scanner-independent: per-pixel optical density (OD) of hematoxylin and
   eosin. Tissue with lumina, nuclei, mitotic figures (category 1) and look-alikes
   (category 2).
2. Acquisition: the scanner's stain vectors turn OD into RGB (Beer-Lambert), then
   optical blur, tone curve and sensor noise.

The last scanner plays the part of the Leica GT450 in MIDOG 2021: its images are in
`MIDOG.json` but its annotations are not; they go to `unlabeled_annotations.json` so
that the domain shift can still be measured.

Same arguments give byte-identical files: every random draw comes from a
`numpy.random.SeedSequence` keyed by (seed, scanner index, image inde

The package, one module per job: `content` draws the scanner-independent tissue
(with `cells` for the single nuclei and figures), `scanners` holds the original four scanner
profiles and their acquisition model, `profiles` the selectable profile sets, `dataset` writes the MIDOG-layout data set,
`slide` a pyramidal whole-slide image.
"""

from .content import (
    BORDER_MARGIN,
    BOX_SIZE,
    CATEGORIES,
    CATEGORY_HARD_NEGATIVE,
    CATEGORY_MITOSIS,
    MIN_OBJECT_DISTANCE,
    REFERENCE_AREA,
    SynthObject,
    render_content,
)
from .dataset import INFO, LICENSES, make_dataset, synth_image
from .profiles import DEFAULT_PROFILES, SCANNER_SETS, ScannerSet, scanner_set
from .scanners import SCANNERS, UNLABELED_SCANNER, ScannerProfile, apply_scanner, write_tiff
from .slide import make_slide

__all__ = [
    "BORDER_MARGIN",
    "BOX_SIZE",
    "CATEGORIES",
    "CATEGORY_HARD_NEGATIVE",
    "CATEGORY_MITOSIS",
    "DEFAULT_PROFILES",
    "INFO",
    "LICENSES",
    "MIN_OBJECT_DISTANCE",
    "REFERENCE_AREA",
    "SCANNERS",
    "SCANNER_SETS",
    "ScannerSet",
    "UNLABELED_SCANNER",
    "ScannerProfile",
    "SynthObject",
    "apply_scanner",
    "make_dataset",
    "make_slide",
    "render_content",
    "scanner_set",
    "synth_image",
    "write_tiff",
]
