"""Pixel types to RGB uint8: one explicit rule per type (the README's table "What bad input
gets"): alpha is dropped, grey is replicated (MinIsWhite inverted), palette goes through its
colour map, CMYK and YCbCr are converted, high-bit data is scaled by its real range; anything
else is an `ImageError` naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ImageError


def high_bit_shift(max_value: int) -> int:
    """Right shift that maps data whose top value is `max_value` onto 0-255: the range is
    rounded up to whole bits, so 12-bit data (4095) shifts by 4 and full 16-bit by 8."""
    return max(0, int(max_value).bit_length() - 8)


def to_rgb_uint8(pixels: np.ndarray, path: Path, shift: int | None = None) -> np.ndarray:
    """(H, W[, C]) grey/RGB(A) array -> (H, W, 3) uint8. 16-bit data is shifted by `shift`
    (default: from the array's own maximum, for images read whole)."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3:
        raise ImageError(path, f"expected a 2-D colour image, got an array of shape {pixels.shape}")
    if pixels.dtype == np.uint16:
        if shift is None:
            shift = high_bit_shift(int(pixels.max()) if pixels.size else 0)
        pixels = (pixels >> shift).astype(np.uint8) if shift else np.minimum(pixels, 255).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        raise ImageError(path, f"unsupported pixel type {pixels.dtype} (need 8- or 16-bit unsigned integers)")
    channels = pixels.shape[2]
    if channels in (1, 2):  # gray or gray + alpha
        pixels = np.repeat(pixels[:, :, :1], 3, axis=2)
    elif channels in (3, 4):
        pixels = pixels[:, :, :3]
    else:
        raise ImageError(path, f"unsupported number of channels: {channels}")
    return np.ascontiguousarray(pixels)


def cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """Uncalibrated CMYK (ink 0-255) -> RGB, the conversion every TIFF reader uses."""
    c, m, y, k = (cmyk[..., i].astype(np.uint32) for i in range(4))
    white = 255 - k
    rgb = [((255 - ch) * white + 127) // 255 for ch in (c, m, y)]
    return np.stack(rgb, -1).astype(np.uint8)


def ycbcr_to_rgb(ycc: np.ndarray, coefficients: tuple[float, float, float] = (0.299, 0.587, 0.114)) -> np.ndarray:
    """Full-range YCbCr (TIFF's default reference black/white) -> RGB."""
    lr, lg, lb = coefficients
    y, cb, cr = (ycc[..., i].astype(np.float32) for i in range(3))
    cb, cr = cb - 128, cr - 128
    r = y + cr * (2 - 2 * lr)
    b = y + cb * (2 - 2 * lb)
    g = (y - lr * r - lb * b) / lg
    return np.clip(np.rint(np.stack([r, g, b], -1)), 0, 255).astype(np.uint8)


def tiff_converter(page: Any, path: Path, sample_max: Callable[[], int]) -> Callable[[np.ndarray], np.ndarray]:
    """The conversion of a TIFF page's decoded samples to RGB uint8, chosen once per file.
    `sample_max` gives the real data range of 16-bit data without a range tag."""
    import tifffile

    P = tifffile.PHOTOMETRIC
    photometric, dtype = page.photometric, np.dtype(page.dtype)
    bits = int(page.bitspersample)
    samples = int(page.samplesperpixel)
    name = getattr(photometric, "name", str(photometric))
    if photometric == P.PALETTE:
        cmap = page.colormap
        if cmap is None:
            raise ImageError(path, "palette image without a colour map")
        cmap = np.asarray(cmap)
        lut = (cmap >> 8 if cmap.max() > 255 else cmap).astype(np.uint8).T  # (entries, 3)
        return lambda a: lut[np.minimum(a[..., 0] if a.ndim == 3 else a, len(lut) - 1)]
    if dtype not in (np.uint8, np.uint16) or page.sampleformat not in (1, None):
        raise ImageError(path, f"unsupported pixel type {dtype} (need 8- or 16-bit unsigned integers)")
    if bits < 8:
        raise ImageError(path, f"{bits}-bit {name.lower()} pixels are not a stained-tissue image (need 8 or more bits per sample)")
    shift = 0
    if dtype == np.uint16:
        tags = page.tags
        tag = tags.get("MaxSampleValue")
        if tag is not None:
            top = int(np.max(tag.value))
        elif bits < 16:
            top = 2**bits - 1
        else:
            top = sample_max()
        shift = high_bit_shift(top)
    if photometric in (P.MINISBLACK, P.MINISWHITE, P.RGB):
        invert = photometric == P.MINISWHITE
        if photometric == P.RGB and samples < 3:
            raise ImageError(path, f"RGB image with {samples} samples per pixel")

        def convert(a: np.ndarray) -> np.ndarray:
            rgb = to_rgb_uint8(a, path, shift)
            return 255 - rgb if invert else rgb

        return convert
    if photometric == P.SEPARATED:
        inkset = page.tags.get("InkSet")
        if samples < 4 or (inkset is not None and int(inkset.value) != 1):
            raise ImageError(path, "separated (ink) colours other than CMYK are not supported")
        return lambda a: cmyk_to_rgb((a >> shift).astype(np.uint8) if shift else a.astype(np.uint8))
    if photometric == P.YCBCR:
        if page.compression in (6, 7):  # the JPEG codec returns RGB already
            return lambda a: to_rgb_uint8(a, path, shift)
        if tuple(getattr(page, "subsampling", None) or (1, 1)) != (1, 1):
            raise ImageError(path, "subsampled YCbCr without JPEG compression is not supported; save it as RGB")
        coef = page.tags.get("YCbCrCoefficients")
        coefficients = tuple(float(v[0]) / float(v[1]) if isinstance(v, tuple) else float(v) for v in _pairs(coef.value)) if coef else (0.299, 0.587, 0.114)
        return lambda a: ycbcr_to_rgb(to_rgb_uint8(a, path, shift), coefficients)  # type: ignore[arg-type]
    raise ImageError(path, f"unsupported colour model {name} (photometric {int(photometric)}); convert it to RGB")


def _pairs(value: Any) -> list[Any]:
    """tifffile gives multi-RATIONAL tags as a flat tuple (n1, d1, n2, d2, ...)."""
    flat = list(value)
    if flat and not isinstance(flat[0], tuple) and len(flat) == 6:
        return [(flat[i], flat[i + 1]) for i in range(0, 6, 2)]
    return flat
