"""Argument parsing shared by several subcommands: typed options that refuse a bad number
as a usage error (exit 2), the detection options of `midog detect` and `midog batch`,
the count options, and the result-plus-image arguments of `midog export` / `midog count`."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping

from ..config.fields import option, option_dest
from ..config.checks import check_mpp, check_positive, check_positive_int, check_probability
from ..errors import MidogError
from ..pipeline.run import RunSettings, settle_run
from ..results.count import DEFAULT_AREA_MM2, CountOptions, field_area_mm2
from ..results.exports import FORMATS, QUPATH_BOUNDS, QUPATH_OBJECTS
from ..results.hotspot import SHAPES
from ..results.writers import REVIEW_FOLDER, Extras
from ..slides.limits import DEFAULT_LIMITS


def arg_type(check: Callable[[Any], Any], name: str) -> Callable[[str], Any]:
    """An argparse `type=` that reports the check's reason as a usage error (exit 2)."""

    def parse(text: str) -> Any:
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name  # argparse names the type in its fallback message
    return parse


probability = arg_type(check_probability, "probability")
positive = arg_type(check_positive, "positive number")
positive_int = arg_type(check_positive_int, "positive integer")
mpp = arg_type(check_mpp, "micrometres per pixel")


def add_detection_args(p: argparse.ArgumentParser) -> None:
    """The options of every command that runs the detector on images (`midog detect`,
    `midog batch`): weights, operating point, spacing, device, style, modes, extras, limits."""
    p.add_argument("--weights", type=Path, default=None, help="weights file (default: the published weights fetched by `midog fetch`)")
    p.add_argument("--threshold", type=probability, default=None,
                   help="operating point in [0, 1] (default: MIDOG_THRESHOLD, else the operating point of a manifest.json beside the weights, "
                   "else the checkpoint's, else 0.64)")
    p.add_argument("--mpp", type=mpp, default=None, help="micrometres per pixel, overriding or replacing the file's resolution")
    p.add_argument("--device", default=None, help="auto (CUDA when available), cpu or cuda[:N] (default: MIDOG_DEVICE, else auto)")
    p.add_argument("--style", choices=["2021", "2022"], default="2021", help="2021: points above threshold; 2022: all candidates with probability and name")
    p.add_argument("--fast", action="store_true", help="channels-last + bfloat16/float16 autocast: faster, scores differ slightly from the reference")
    p.add_argument("--batch-size", type=positive_int, default=None, help="tiles per batch (default on CPU: 4, or 10 with --fast; on GPU: by free memory)")
    tissue = p.add_mutually_exclusive_group()
    tissue.add_argument("--tissue-only", dest="tissue_only", action="store_true", default=None, help="skip background tiles (default for whole-slide images)")
    tissue.add_argument("--all-tiles", dest="tissue_only", action="store_false", help="run every tile (default for region TIFFs)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars (--quiet hides them too)")
    add_extras_args(p)
    add_limit_args(p)


def add_limit_args(p: argparse.ArgumentParser) -> None:
    """The per-image limits and time budget, for every command that runs the detector."""
    L = DEFAULT_LIMITS
    g = p.add_argument_group("limits (an image beyond them is refused, the others still run)")
    g.add_argument("--max-megapixels", type=positive, default=None, help=f"image size (default: MIDOG_MAX_MEGAPIXELS, else {L.max_megapixels:g})")
    g.add_argument("--max-chunk-mb", type=positive, default=None, help=f"one decoded TIFF tile or strip (default: MIDOG_MAX_CHUNK_MB, else {L.max_chunk_mb:g})")
    g.add_argument("--max-memory-mb", type=positive, default=None, help=f"an image decoded whole, e.g. PNG (default: MIDOG_MAX_MEMORY_MB, else {L.max_memory_mb:g})")
    g.add_argument("--time-budget", type=positive, default=None, metavar="SECONDS",
                   help="stop an image after this long; it becomes that image's error (default: MIDOG_TIME_BUDGET, else none)")


def run_settings(a: argparse.Namespace, weights: Path) -> RunSettings:
    """The run that `add_detection_args`' flags describe, settled (pipeline.run's order)."""
    return settle_run(
        weights, threshold=a.threshold, mpp=a.mpp, device=a.device, style=a.style, fast=a.fast, batch_size=a.batch_size,
        tissue_only=a.tissue_only, compile=getattr(a, "compile", False), extras=extras_from_args(a),
        max_megapixels=a.max_megapixels, max_chunk_mb=a.max_chunk_mb, max_memory_mb=a.max_memory_mb, time_budget=a.time_budget,
    )


def add_extras_args(p: argparse.ArgumentParser) -> None:
    """--export (with the QuPath options), --count (with the hotspot options), --overlay and
    --review for `midog detect` and `midog batch`."""
    group = p.add_argument_group("exports, count and review (written beside each JSON output)")
    group.add_argument("--export", action="append", choices=list(FORMATS), default=[],
                       help="also write <stem>.geojson (QuPath), .points.tsv (QuPath's Counting tool), .xml (ASAP), .csv, "
                       "or .dcm (dicom-ann: DICOM annotations, for DICOM slides); repeatable")
    add_qupath_args(group)  # type: ignore[arg-type]
    group.add_argument("--count", action="store_true", help="also write <stem>.count.json: mitotic count, per mm², hotspot, score")
    group.add_argument("--overlay", action="store_true", help="with --count: also draw <stem>.overlay.png")
    group.add_argument("--review", action="store_true", help=f"also write a review page per image: {REVIEW_FOLDER}/<stem>.html and {REVIEW_FOLDER}/index.html")
    add_count_args(group)  # type: ignore[arg-type]


def add_qupath_args(p: argparse.ArgumentParser) -> None:
    """--qupath-objects and --qupath-bounds, for `midog export` and `--export`."""
    p.add_argument("--qupath-objects", choices=QUPATH_OBJECTS, default="annotation",
                   help="GeoJSON: point annotations (default; drawn at every zoom, what the Counting tool uses) or detections as small circles")
    p.add_argument("--qupath-bounds", choices=QUPATH_BOUNDS, default="auto",
                   help="QuPath exports: subtract the slide's non-empty-region offset where QuPath crops to it (auto, default) or never (off)")


def extras_from_args(args: argparse.Namespace) -> Extras:
    if args.overlay and not args.count:
        raise MidogError("--overlay draws the count's picture: add --count")
    review = getattr(args, "review", False)
    # The hotspot options shape the review page's hotspot too, with or without --count.
    hotspot = count_options(args) if args.count or review else None
    return Extras(tuple(dict.fromkeys(args.export)), hotspot if args.count else None, args.overlay,
                  args.qupath_objects, args.qupath_bounds, hotspot if review else None)


def add_count_args(p: argparse.ArgumentParser) -> None:
    """The hotspot options, shared by `midog count` and `midog detect --count`."""
    p.add_argument("--area-mm2", type=float, default=None, help=f"hotspot area in mm² (default {DEFAULT_AREA_MM2:g})")
    p.add_argument("--shape", choices=SHAPES, default="circle", help="hotspot shape (square: axis-aligned)")
    p.add_argument("--field-diameter-mm", type=float, default=None, help="instead of --area-mm2: a microscope's field diameter ...")
    p.add_argument("--fields", type=int, default=10, help="... and the number of fields (default 10): area = fields x field area")
    p.add_argument("--heatmap", action="store_true", help="add a density heatmap (mitoses per mm²) to the overlay")


def count_options(args: argparse.Namespace) -> CountOptions:
    if args.field_diameter_mm is not None and args.area_mm2 is not None:
        raise MidogError("give either --area-mm2 or --field-diameter-mm (with --fields), not both")
    if args.field_diameter_mm is not None:
        if args.field_diameter_mm <= 0 or args.fields < 1:
            raise MidogError("--field-diameter-mm must be positive and --fields at least 1")
        area = field_area_mm2(args.field_diameter_mm, args.fields)
    else:
        area = DEFAULT_AREA_MM2 if args.area_mm2 is None else args.area_mm2
    if not area > 0:
        raise MidogError(f"--area-mm2 must be positive, not {area:g}")
    fields = (args.fields, args.field_diameter_mm) if args.field_diameter_mm is not None else (None, None)
    return CountOptions(area, args.shape, args.heatmap, *fields)


def add_result_parser(
    subparsers: argparse._SubParsersAction, name: str, help: str, result: tuple[str, str], image_help: str, image_required: bool = False
) -> argparse.ArgumentParser:
    """A command that reads a points result (`result`: its metavar and help) and converts
    between pixels and mm: the result, then --image and --mpp, the two ways to the spacing."""
    p = subparsers.add_parser(name, help=help)
    p.add_argument("result", type=Path, metavar=result[0], help=result[1])
    p.add_argument("--image", type=Path, required=image_required, default=None, help=image_help)
    p.add_argument("--mpp", type=float, default=None, help="micrometres per pixel, overriding the image's spacing or standing in for it")
    return p


def _hint(cls: type, name: str) -> tuple[Any, bool, int | None]:
    """(element type, optional, tuple length) of a field's annotation."""
    hint = typing.get_type_hints(cls)[name]
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        return args[0], optional, len(args)
    return hint, optional, None


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def add_config_arguments(parser: argparse.ArgumentParser | Any, cls: type, groups: Mapping[str, Any] | None = None) -> None:
    """Add an option for every field of dataclass `cls`; a field that is itself a dataclass
    adds its own fields, in `groups[field name]` (an argument group) when given."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("cli") or option()["cli"]
        if not spec["enabled"]:
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            add_config_arguments((groups or {}).get(f.name, parser), hints[f.name], groups)
            continue
        kind, optional, length = _hint(cls, f.name)
        default = _default(f)
        flag = "--" + (spec["flag"] or f.name.replace("_", "-"))
        helptext = spec["help"]
        if default not in (dataclasses.MISSING, None) and kind is not bool and spec["const"] is None:
            shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
            helptext = f"{helptext} (default: {shown})" if helptext else f"default: {shown}"
        kw: dict[str, Any] = dict(dest=option_dest(cls, f.name), default=argparse.SUPPRESS, help=helptext or None)
        if spec["positional"]:
            parser.add_argument(kw.pop("dest"), metavar=spec["metavar"], type=kind, help=kw["help"])
            continue
        names = [flag, *spec["aliases"]]
        if spec["const"] is not None:
            kw.update(action="store_const", const=spec["const"])
        elif kind is bool and spec["choices"] is None:
            if spec["negatable"]:
                kw["action"] = argparse.BooleanOptionalAction
            elif default is True:
                names, kw["action"] = ["--no-" + flag[2:]], "store_false"
            else:
                kw["action"] = "store_true"
        else:
            choices = spec["choices"]
            kw["type"] = str if isinstance(choices, Mapping) else kind
            if choices is not None:
                kw["choices"] = list(choices)
            else:
                kw["metavar"] = spec["metavar"] or f.name.upper()
            if length:
                kw["nargs"] = length
            if default is dataclasses.MISSING:
                kw["required"] = True
        parser.add_argument(*names, **kw)
