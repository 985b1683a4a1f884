"""What an image may cost before it is refused (pixels, one decoded chunk, a whole decode),
and the option names that raise each limit in the refusal's words."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ImageError


@dataclass(frozen=True)
class Limits:
    """What an image may cost before it is refused, and how the user raises each limit.

    The defaults pass any scanned slide (the largest are ~15 gigapixels, tiles of 256-1024
    px) and refuse headers that would run for hours or exhaust memory."""

    max_megapixels: float = 25_000.0  # width x height of the full-resolution image
    max_chunk_mb: float = 256.0  # one decoded TIFF tile or strip
    max_memory_mb: float = 4096.0  # an image that is decoded whole (PNG, JPEG, MHA, ...)
    # Option names quoted in refusals: `midog detect`'s by default, process.py its own.
    mpp_option: str | None = "--mpp"
    megapixels_option: str = "--max-megapixels"
    chunk_option: str = "--max-chunk-mb"
    memory_option: str = "--max-memory-mb"

    def mpp_hint(self, what: str = "it") -> str:
        return f"; pass {what} with {self.mpp_option}" if self.mpp_option else ""

    def check_pixels(self, path: Path, width: int, height: int) -> None:
        if width <= 0 or height <= 0:
            raise ImageError(path, f"the header gives an empty image ({width} x {height} px)")
        if width * height > self.max_megapixels * 1e6:
            raise ImageError(
                path,
                f"{width} x {height} px ({width * height / 1e9:.1f} gigapixels) is more than the limit of "
                f"{self.max_megapixels:g} megapixels; raise it with {self.megapixels_option} if the image is real",
            )


DEFAULT_LIMITS = Limits()
