"""The reference's network, torchvision-style: the ResNet18 + FPN RetinaNet with its
scanner discriminator (`retinanet`), the anchors, the box coding and the post-processing
(score threshold, per-tile IoU NMS, whole-image distance NMS)."""

from __future__ import annotations

from .anchors import make_anchors
from .box_coding import decode, encode
from .postprocess import distance_nms, tile_boxes
from .retinanet import RetinaNetDA, load_model

__all__ = ["RetinaNetDA", "decode", "distance_nms", "encode", "load_model", "make_anchors", "tile_boxes"]
