"""What is made of `Detections`: viewer exports (QuPath, ASAP, CSV), the mitotic count and
hotspot, the overlay, every file written for one image (`writers`), and the one reader
that turns a result file back into `Detections` (`reader`)."""

from __future__ import annotations

from .count import CountOptions, CountResult, count
from .exports import FORMATS, export
from .reader import read_result, read_result_on
from .writers import Extras, write_result

__all__ = ["CountOptions", "CountResult", "Extras", "FORMATS", "count", "export", "read_result", "read_result_on", "write_result"]
