"""MIDOG 2021 reference detector: image -> tiles -> network -> boxes -> points -> JSON."""

__version__ = "0.1.0"
