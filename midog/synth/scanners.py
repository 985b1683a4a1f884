"""The original four synthetic scanners (profile set "legacy"): how each turns stain
optical density into RGB, and the TIFF it writes (resolution tags included). The
profiles modelled on the MIDOG scanners are in `profiles`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path


@dataclass(frozen=True)
class ScannerProfile:
    """How one synthetic scanner turns stain optical density into RGB."""

    name: str
    # Written to the TIFF tags as an integer so that the spacing SimpleITK derives
    # (25.4 / res for inch, 10 / res for cm) is exactly `spacing_mm` below.
    resolution: int
    resolution_unit: str  # "INCH" or "CENTIMETER"
    hematoxylin: tuple[float, float, float]  # RGB OD of unit stain, normalised on use
    eosin: tuple[float, float, float]
    stain_scale: tuple[float, float]  # (H, E) staining intensity multipliers
    white: tuple[float, float, float]  # RGB of glass (no tissue)
    gamma: float
    contrast: float  # around mid-grey
    brightness: float  # added after contrast, in 8-bit levels
    blur_sigma: float  # px, optics
    noise_sigma: float  # 8-bit levels, sensor
    # The scanner's own lossy compression (JPEG quality 1-100), applied once to the
    # recorded image as the real scanners store their tiles; None: lossless (the
    # original four profiles, whose files must stay byte-identical).
    jpeg_quality: int | None = None

    @property
    def spacing_mm(self) -> float:
        per_unit_mm = 25.4 if self.resolution_unit == "INCH" else 10.0
        return per_unit_mm / self.resolution

    @property
    def spacing_um(self) -> float:
        return self.spacing_mm * 1000.0


# Fixed on purpose (not drawn from the seed): a scanner is a stable device, and tests
# and benchmarks can rely on the same four colour domains for every seed.
# One row a scanner, the columns in ScannerProfile's field order after the name:
# resolution, unit, hematoxylin OD, eosin OD, (H, E) stain scale, white, gamma, contrast,
# brightness, blur sigma, noise sigma.
_PROFILES = (
    # A: Ruifrok-Johnston hematoxylin; eosin absorbing more blue than red, so that
    # stroma is pink rather than magenta. 0.2274 um/px, the reference's own test image
    # (XResolution 111676 px/inch).
    ("A", 111676, "INCH", (0.650, 0.704, 0.286), (0.100, 0.890, 0.400), (1.0, 1.0), (243.0, 241.0, 246.0), 1.0, 1.0, 0.0, 0.6, 1.5),
    # B: magenta hematoxylin and eosin, brighter and slightly softer.
    ("B", 40000, "CENTIMETER", (0.540, 0.780, 0.320), (0.050, 0.920, 0.280), (0.9, 1.1), (248.0, 245.0, 248.0), 0.95, 1.05, 3.0, 0.8, 2.0),
    # C: dark, saturated and sharp, with more noise.
    ("C", 105833, "INCH", (0.700, 0.680, 0.230), (0.160, 0.950, 0.300), (1.1, 1.2), (238.0, 236.0, 242.0), 1.08, 1.1, -6.0, 0.4, 2.5),
    # D (unlabeled, the GT450's role): pale, blue-grey hematoxylin, orange eosin,
    # warm white point, low contrast and the most blur: the largest shift from A-C.
    ("D", 41152, "CENTIMETER", (0.720, 0.620, 0.380), (0.020, 0.720, 0.660), (0.85, 0.8), (250.0, 247.0, 240.0), 0.92, 0.88, 5.0, 1.1, 3.0),
)
SCANNERS: tuple[ScannerProfile, ...] = tuple(ScannerProfile(f"synthetic scanner {letter}", *values) for letter, *values in _PROFILES)
UNLABELED_SCANNER = SCANNERS[-1].name


def apply_scanner(
    hem: np.ndarray, eos: np.ndarray, scanner: ScannerProfile, rng: np.random.Generator
) -> np.ndarray:
    """Turn stain OD maps into the (H, W, 3) uint8 RGB image this scanner would record."""
    from scipy.ndimage import gaussian_filter

    if scanner.blur_sigma > 0:
        # Blurring the two OD maps instead of three RGB channels: a third cheaper, and
        # at sigma ~1 px indistinguishable from blurring intensities.
        hem = gaussian_filter(hem, scanner.blur_sigma)
        eos = gaussian_filter(eos, scanner.blur_sigma)
    g = scanner.gamma
    vh = np.asarray(scanner.hematoxylin, dtype=np.float64)
    ve = np.asarray(scanner.eosin, dtype=np.float64)
    vh = (g * scanner.stain_scale[0] / np.linalg.norm(vh)).astype(np.float32) * vh.astype(np.float32)
    ve = (g * scanner.stain_scale[1] / np.linalg.norm(ve)).astype(np.float32) * ve.astype(np.float32)
    # Beer-Lambert, tone curve and contrast folded into one affine map of exp(-gamma OD):
    # 255 * (white * exp(-od) / 255) ** gamma == 255 * (white / 255) ** gamma * exp(-gamma * od)
    white = np.asarray(scanner.white, dtype=np.float64)
    scale = (scanner.contrast * 255.0 * (white / 255.0) ** g).astype(np.float32)
    offset = np.float32(128.0 * (1.0 - scanner.contrast) + scanner.brightness)
    rgb = np.exp(-(hem[..., None] * vh + eos[..., None] * ve))
    rgb *= scale
    rgb += offset
    if scanner.noise_sigma > 0:
        rgb += np.float32(scanner.noise_sigma) * rng.standard_normal(rgb.shape, dtype=np.float32)
    np.rint(rgb, out=rgb)
    np.clip(rgb, 0, 255, out=rgb)
    out = rgb.astype(np.uint8)
    if scanner.jpeg_quality is not None:
        out = jpeg_roundtrip(out, scanner.jpeg_quality)
    return out


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """The image as a scanner storing JPEG tiles at `quality` hands it out: 8x8 block
    artefacts and chroma subsampling, deterministic for a given libjpeg."""
    import imagecodecs

    return imagecodecs.jpeg8_decode(imagecodecs.jpeg8_encode(np.ascontiguousarray(rgb), level=int(quality)))


def _scanner_key(profile: ScannerProfile) -> int:
    # Stable integer per scanner name for seeding (hash() is salted per process).
    import zlib

    return zlib.crc32(profile.name.encode("utf-8"))


def write_tiff(path: str | Path, rgb: np.ndarray, scanner: ScannerProfile) -> None:
    """Lossless RGB TIFF with the scanner's resolution tags, as the MIDOG files have."""
    import tifffile

    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp,
            rgb,
            photometric="rgb",
            compression="zlib",
            compressionargs={"level": 1},  # levels 6-9 cost 2-3x the time for 1-2 % smaller files
            predictor=2,  # horizontal differencing: smooth tissue compresses ~2x better
            resolution=(scanner.resolution, scanner.resolution),
            resolutionunit=scanner.resolution_unit,
            metadata=None,  # no JSON description: the file is the image and its tags only
        )
