"""The inference core: a loaded network with the reference's tiling, normalisation and both
NMS stages (`Detector`), the `Detections` it returns, the device it runs on and where its
weights come from. How detections are written (the challenge JSON among them) is `results/`'s."""

from __future__ import annotations

from .core import Detector
from .detections import MITOTIC, NON_MITOTIC, Detections, Thumbnail
from .weights import published_weights

__all__ = ["Detections", "Detector", "MITOTIC", "NON_MITOTIC", "Thumbnail", "published_weights"]
