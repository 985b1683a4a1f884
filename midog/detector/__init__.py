"""The inference core: a loaded network with the reference's tiling, normalisation and both
NMS stages (`Detector`), the `Detections` it returns and their challenge JSON, the device
it runs on and where its weights come from."""

from __future__ import annotations

from .core import Detector
from .detections import MITOTIC, NON_MITOTIC, STYLES, Detections, Thumbnail
from .weights import published_weights

__all__ = ["Detections", "Detector", "MITOTIC", "NON_MITOTIC", "STYLES", "Thumbnail", "published_weights"]
