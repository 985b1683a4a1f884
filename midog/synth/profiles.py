"""Selectable scanner-profile sets for `midog synth --profiles`.

`legacy` is the original four scanners (A-D, `scanners.SCANNERS`), the default, so that
every earlier data set, test and benchmark reproduces byte for byte. `midog2021` imitates
the differences documented for the MIDOG 2021 scanners (docs/synthetic-scanners.md): three
labelled training scanners, the Leica GT450's role as the unlabelled fourth, and two test
scanners never used in training.

The values were fixed from the documented differences before any model was trained on
them, and must not be tuned to make one training method win (issue 22).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MidogError
from .scanners import SCANNERS, ScannerProfile


@dataclass(frozen=True)
class ScannerSet:
    """Scanners of one synthetic data set: `training` go to MIDOG.json (the last one
    unlabelled, as the GT450), `unseen` only to the test files, never to MIDOG.json."""

    name: str
    training: tuple[ScannerProfile, ...]
    unseen: tuple[ScannerProfile, ...] = ()

    @property
    def unlabeled(self) -> str:
        return self.training[-1].name

    @property
    def all(self) -> tuple[ScannerProfile, ...]:
        return self.training + self.unseen


# Columns in ScannerProfile's order: resolution, unit, hematoxylin OD, eosin OD, (H, E)
# stain scale, white, gamma, contrast, brightness, blur sigma, noise sigma, JPEG quality.
# Resolutions are chosen so that the spacing is exact: 25.4 mm / res (inch), 10 mm / res (cm).
_MIDOG2021 = (
    # Hamamatsu NanoZoomer XR: 0.2274 um/px (the reference's own test image), neutral
    # purple-blue hematoxylin and pink eosin, medium sharpness, NDPI-style JPEG.
    ("Hamamatsu XR-like", 111676, "INCH", (0.620, 0.720, 0.310), (0.090, 0.920, 0.380), (1.0, 1.0),
     (242.0, 240.0, 245.0), 1.0, 1.0, 0.0, 0.6, 1.5, 85),
    # Hamamatsu S360: same vendor, so a colour response close to the XR's; newer optics
    # (sharper), slightly more contrast, 0.2300 um/px, higher JPEG quality.
    ("Hamamatsu S360-like", 43478, "CENTIMETER", (0.600, 0.740, 0.300), (0.070, 0.930, 0.360), (1.05, 1.0),
     (244.0, 242.0, 246.0), 1.0, 1.05, 0.0, 0.45, 1.2, 90),
    # Aperio ScanScope CS2: another vendor's colour response, warmer (redder eosin,
    # yellowish white point), higher contrast, 0.2520 um/px, SVS's default JPEG quality 70.
    ("Aperio CS2-like", 100794, "INCH", (0.660, 0.700, 0.270), (0.030, 0.850, 0.520), (1.1, 1.1),
     (240.0, 236.0, 228.0), 1.05, 1.1, -4.0, 0.7, 2.0, 70),
    # Leica GT450 (unlabelled in training, as in MIDOG 2021): brighter illumination and
    # lower contrast: near-white glass, paler stain, tone lifted, contrast squeezed.
    # 0.2500 um/px (the real GT450 records about 0.26).
    ("Leica GT450-like", 40000, "CENTIMETER", (0.660, 0.700, 0.280), (0.080, 0.900, 0.420), (0.8, 0.75),
     (252.0, 251.0, 252.0), 0.9, 0.78, 14.0, 0.6, 1.5, 85),
)
_MIDOG2021_UNSEEN = (
    # 3DHistech PANNORAMIC (a test-set scanner of MIDOG 2021, not in its training set):
    # cooler colour (bluer hematoxylin, bluish white), softer focus, 0.2430 um/px, JPEG 80.
    ("PANNORAMIC-like", 41152, "CENTIMETER", (0.720, 0.660, 0.220), (0.140, 0.920, 0.360), (1.1, 1.0),
     (238.0, 242.0, 248.0), 1.0, 1.05, -2.0, 0.9, 2.0, 80),
    # An older-generation scanner (the "RS" role): dimmer, noisier and softer than the
    # training scanners, 0.2400 um/px, JPEG 75.
    ("RS-like", 105833, "INCH", (0.640, 0.710, 0.290), (0.060, 0.900, 0.430), (1.05, 1.1),
     (232.0, 230.0, 234.0), 1.05, 0.95, -8.0, 1.0, 3.0, 75),
)

SCANNER_SETS: dict[str, ScannerSet] = {
    "legacy": ScannerSet("legacy", SCANNERS),
    "midog2021": ScannerSet(
        "midog2021",
        tuple(ScannerProfile(*row) for row in _MIDOG2021),
        tuple(ScannerProfile(*row) for row in _MIDOG2021_UNSEEN),
    ),
}
DEFAULT_PROFILES = "legacy"


def scanner_set(name: str) -> ScannerSet:
    """The named profile set; an unknown name is one clear error listing the choices."""
    if name not in SCANNER_SETS:
        raise MidogError(f"unknown scanner profile set {name!r}; choose one of {', '.join(SCANNER_SETS)}")
    return SCANNER_SETS[name]
