"""The fuzz targets: every entry point that reads a file a user or the platform hands us,
each with a seed corpus made by the project's own generators, and the outcome rule.

Outcome rule (docs/fuzzing.md): a call returns, or raises `MidogError` with a message that
names the file. Any other exception is a crash; a call over 10 s is a hang and a process over
2 GB resident a memory failure (those two are enforced by the fuzzing engine, see fuzz.py).

A fuzz input is the file's bytes, preceded by one selector byte where a target has several
readers or file kinds (the file's suffix, which reader reads it): mutations keep the kind
and change the content, or change the kind of a content. `check(name, data)` runs one input
and returns None when the rule holds, else a one-line description of the failure; the
regression test (tests/test_fuzz.py) replays every file in tests/fuzz_regressions/ with it.

Adding a reader: write `run_<kind>(path)` and `seeds_<kind>()` and list a `Target` in
TARGETS.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import shutil
import tempfile
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPACING_MM = (0.00025, 0.00025)


@dataclass(frozen=True)
class Target:
    name: str
    # One entry per kind of input: the file name the bytes are written to. With more than
    # one, the input's first byte picks the kind (modulo their number).
    files: tuple[str, ...]
    run: Callable[[Path, int], None]  # (the written file, the kind's index)
    seeds: Callable[[], list[tuple[int, bytes]]]  # (kind, content) pairs
    what: str
    json_like: bool = False  # structure-aware JSON mutation helps (fuzz.py)

    def encode(self, kind: int, content: bytes) -> bytes:
        return (bytes([kind]) + content) if len(self.files) > 1 else content

    def decode(self, data: bytes) -> tuple[int, bytes]:
        if len(self.files) > 1:
            if not data:
                return 0, b""
            return data[0] % len(self.files), data[1:]
        return 0, data


# ---------------------------------------------------------------------------
# Images: open_slide, a region, the thumbnail and the tissue mask
# ---------------------------------------------------------------------------


def run_slide(path: Path, kind: int = 0) -> None:
    from midog.slides.readers import open_slide
    from midog.slides.tissue import tissue_mask

    with open_slide(path) as slide:
        w, h = min(64, slide.width), min(64, slide.height)
        x, y = (slide.width - w) // 2, (slide.height - h) // 2
        region = slide.read_region(x, y, w, h)
        assert region.shape == (h, w, 3) and region.dtype == np.uint8, f"region {region.shape} {region.dtype}"
        slide.is_blank(x, y, w, h)
        thumb, downsample = slide.thumbnail(256)
        assert thumb.ndim == 3 and thumb.shape[2] == 3 and downsample >= 1, f"thumbnail {thumb.shape} {downsample}"
        tissue_mask(thumb)


def _rgb(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A small tissue-like RGB image from the synthetic scanner generator."""
    from midog.synth.dataset import synth_image

    return synth_image(seed, 0, max(w, 128), max(h, 128))[0][:h, :w]


def _tiff(**kw: object) -> bytes:
    import tifffile

    data = kw.pop("data")
    out = io.BytesIO()
    kw.setdefault("resolution", (40000, 40000))
    kw.setdefault("resolutionunit", "CENTIMETER")
    tifffile.imwrite(out, data, metadata=None, **kw)
    return out.getvalue()


TIFF_COMPRESSIONS = (None, "lzw", "deflate", "adobe_deflate", "packbits", "jpeg", "zstd", "webp", "jpeg2000", "lzma")


def seeds_tiff() -> list[tuple[int, bytes]]:
    """Strip and tiled TIFF, each compression, and the pixel types the readers convert."""
    rgb = _rgb()
    seeds = []
    for compression in TIFF_COMPRESSIONS:
        seeds.append(_tiff(data=rgb, photometric="rgb", compression=compression, rowsperstrip=16))
        seeds.append(_tiff(data=rgb, photometric="rgb", compression=compression, tile=(16, 16)))
    gray16 = (rgb[..., 1].astype(np.uint16) * 257) >> 4
    seeds.append(_tiff(data=gray16, photometric="minisblack", rowsperstrip=8))
    seeds.append(_tiff(data=rgb[..., 0], photometric="palette", colormap=np.tile(np.arange(256, dtype=np.uint16) * 257, (3, 1))))
    seeds.append(_tiff(data=np.dstack([rgb, rgb[..., :1]]), photometric="separated", rowsperstrip=16))  # CMYK
    seeds.append(_tiff(data=rgb, photometric="ycbcr", compression="jpeg", tile=(16, 16)))
    seeds.append(_tiff(data=np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), photometric="rgb", extrasamples=[2], tile=(16, 16)))
    seeds.append(_tiff(data=np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate", rowsperstrip=16))
    seeds.append(_tiff(data=rgb.astype(np.float32) / 255, photometric="rgb", tile=(16, 16)))
    seeds.append(_tiff(data=rgb, photometric="rgb", resolution=(0.25, 0.25), resolutionunit=None))  # no spacing
    return [(0, s) for s in seeds]


def seeds_wsi() -> list[tuple[int, bytes]]:
    """BigTIFF, a pyramid (make_slide, the benchmarks' slide generator) and vendor-style
    TIFF: an Aperio SVS-like description (read through openslide) and an OME-TIFF."""
    import tifffile

    from midog.synth.slide import make_slide

    seeds = []
    rgb = _rgb(64, 64)
    for compression in (None, "jpeg", "lzw"):
        seeds.append((0, _tiff(data=rgb, photometric="rgb", compression=compression, tile=(16, 16), bigtiff=True)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pyramid.tiff"
        make_slide(path, 400, 320, n_regions=2, region_size=128, tile=32, levels=3)
        seeds.append((0, path.read_bytes()))
        # Aperio's layout: tiled JPEG base, the MPP in the ImageDescription, a thumbnail page.
        out = io.BytesIO()
        with tifffile.TiffWriter(out) as tif:
            desc = "Aperio Image Library v12.0.15\r\n64x64 [0,0 64x64] (16x16) JPEG Q=70|AppMag = 40|MPP = 0.2500"
            tif.write(rgb, photometric="rgb", compression="jpeg", tile=(16, 16), description=desc, metadata=None)
            tif.write(rgb[::4, ::4], photometric="rgb", compression="jpeg", metadata=None, subfiletype=0)
        seeds.append((1, out.getvalue()))
        ome = io.BytesIO()
        tifffile.imwrite(ome, rgb, photometric="rgb", tile=(16, 16), ome=True, metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
        seeds.append((0, ome.getvalue()))
    return seeds


def seeds_sitk() -> list[tuple[int, bytes]]:
    """The formats SimpleITK reads for us, written by SimpleITK: kind = index in SITK_FILES."""
    import SimpleITK as sitk

    rgb = _rgb(32, 32)
    seeds = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, name in enumerate(SITK_FILES):
            image = sitk.GetImageFromArray(rgb, isVector=True)
            image.SetSpacing((0.00025, 0.00025))
            path = Path(tmp) / name
            if name.endswith(".mhd"):
                continue  # a header beside a .raw file: two files, not one input
            sitk.WriteImage(image, str(path))
            seeds.append((kind, path.read_bytes()))
    return seeds


SITK_FILES = ("image.png", "image.jpg", "image.bmp", "image.mha", "image.nrrd", "image.nii", "image.mhd")


# ---------------------------------------------------------------------------
# Result files and their sidecars
# ---------------------------------------------------------------------------


def _detections_json(style: str) -> dict:
    from midog.detector.detections import Detections

    boxes = np.array([[10, 12, 60, 70], [100, 40, 150, 90]], float)
    found = Detections(boxes=boxes, scores=np.array([0.9, 0.5]), classes=np.zeros(2, np.int64), spacing_mm=SPACING_MM)
    from midog.results.challenge import multiple_points

    return multiple_points(found, style)


def seeds_result() -> list[tuple[int, bytes]]:
    docs = [_detections_json("2021"), _detections_json("2022"), {**_detections_json("2022"), "name": "Points of interest"}]
    return [(0, json.dumps(d).encode()) for d in docs]


def run_result(path: Path, kind: int = 0) -> None:
    from midog.evaluation.io import read_prediction_file
    from midog.results.reader import at_threshold, read_result

    found = read_result(path, SPACING_MM)
    read_prediction_file(path)
    try:
        at_threshold(found, 0.5, path)
    except Exception as exc:  # a 2021 file has no probabilities: the refusal must name it
        if "no probability" not in str(exc):
            raise


def seeds_sidecar() -> list[tuple[int, bytes]]:
    from midog.results.sidecar import ResultInfo, write_info

    with tempfile.TemporaryDirectory() as tmp:
        info = ResultInfo(SPACING_MM, (7215, 5412), (0, 0), "001.tiff", "ab" * 32, 0.64, "2022")
        return [(0, write_info(Path(tmp) / "001.json", info).read_bytes())]


def run_sidecar(path: Path, kind: int = 0) -> None:
    from midog.results.sidecar import read_info, read_recorded

    result = path.with_name(path.name.removesuffix(".midog.json") + ".json")
    result.write_text(json.dumps(_detections_json("2022")))
    info = read_info(result)
    if info is not None:
        read_recorded(result, mpp=info.spacing_mm[0] * 1000)


# ---------------------------------------------------------------------------
# What a run reads: the platform's inputs.json, batch lists and resume fingerprints
# ---------------------------------------------------------------------------


_process = None


def process_module():
    """process.py, the platform entry point (not a package module)."""
    global _process
    if _process is None:
        spec = importlib.util.spec_from_file_location("midog_process_entry", ROOT / "process.py")
        _process = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_process)
    return _process


INPUTS_FILES = ("inputs.json", "list.txt", "list.csv", "fingerprint.json")


def seeds_inputs() -> list[tuple[int, bytes]]:
    sockets = [
        {"interface": {"kind": "Image", "slug": "histopathology-region-of-interest-cropout", "relative_path": "images/histopathology-roi-cropout"}, "image": {"name": "001.tiff"}},
        {"interface": {"kind": "String", "slug": "note", "relative_path": "note.json"}, "value": "x"},
    ]
    fingerprint = {"input": {"size": 10, "mtime_ns": 1, "head_tail_sha256": "0" * 64}, "weights_sha256": "1" * 64, "settings": {"threshold": 0.64}}
    return [
        (0, json.dumps(sockets).encode()),
        (1, b"# cohort\n001.tiff\nsub/002.tiff\n"),
        (2, b"image,scanner\n001.tiff,A\n002.tiff,B\n"),
        (3, json.dumps(fingerprint).encode()),
    ]


def run_inputs(path: Path, kind: int) -> None:
    from midog.pipeline.container import find_layout
    from midog.pipeline.inputs import collect_images, fingerprint_path, is_finished

    if kind == 0:
        find_layout(path.parent)
    elif kind in (1, 2):
        collect_images([str(path)])
    else:
        target = path.parent / "001.json"
        target.write_text("{}")
        fingerprint_path(target).parent.mkdir(exist_ok=True)
        shutil.copyfile(path, fingerprint_path(target))
        record = {"input": {"size": 10, "mtime_ns": 1, "head_tail_sha256": "0" * 64}, "weights_sha256": "1" * 64, "settings": {"threshold": 0.64}}
        is_finished(target, record)


MANIFEST_FILES = ("manifest.json", "model/manifest.json")


FAKE_WEIGHTS = b"not really weights"


def seeds_manifest() -> list[tuple[int, bytes]]:
    from midog.detector.weights import git_blob_sha1

    model = json.loads((ROOT / "model" / "manifest.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:  # the model manifest lists the weights beside it, by blob
        (Path(tmp) / "w").write_bytes(FAKE_WEIGHTS)
        blob = git_blob_sha1(Path(tmp) / "w")
    for artefact in model.get("artefacts", []):
        if Path(artefact["dest"]).name == "RetinaNetDA.pth":
            artefact["blob"] = blob
    return [(0, (ROOT / "weights" / "manifest.json").read_bytes()), (1, json.dumps(model).encode())]


def run_manifest(path: Path, kind: int) -> None:
    from midog.detector.weights import load_manifest, select
    from midog.pipeline.run import manifest_threshold

    if kind == 0:
        artefacts = load_manifest(path, root=path.parent)
        select(artefacts, None)
    else:
        weights = path.parent / "RetinaNetDA.pth"
        weights.write_bytes(FAKE_WEIGHTS)
        manifest_threshold(weights)


# ---------------------------------------------------------------------------
# Labels: what evaluation, review and calibration read
# ---------------------------------------------------------------------------


LABEL_FILES = ("MIDOG.json", "ground-truth.json", "domains.json")


def seeds_labels() -> list[tuple[int, bytes]]:
    from midog.synth.dataset import make_dataset

    with tempfile.TemporaryDirectory() as tmp:
        make_dataset(tmp, seed=0, images_per_scanner=1, size=(128, 128), workers=1)
        midog = (Path(tmp) / "MIDOG.json").read_bytes()
    truth = {"001.tiff": [[0.01, 0.02, 0], [0.03, 0.04, 0]], "002.tiff": []}
    domains = {"001.tiff": "Hamamatsu XR", "002.tiff": "Aperio CS2"}
    return [(0, midog), (1, json.dumps(truth).encode()), (2, json.dumps(domains).encode()), (2, midog)]


def run_labels(path: Path, kind: int) -> None:
    from midog.evaluation.io import read_domains, read_ground_truth

    if kind == 2:
        read_domains(path)
    else:
        read_ground_truth(path, spacing_mm=SPACING_MM[0])


# ---------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("tiff", ("image.tiff",), run_slide, seeds_tiff, "strip and tiled TIFF, every compression and pixel type: open_slide, region, thumbnail, tissue mask"),
        Target("wsi", ("slide.tiff", "slide.svs"), run_slide, seeds_wsi, "BigTIFF, pyramidal and vendor-style (SVS, OME) TIFF: the same calls"),
        Target("sitk", SITK_FILES, run_slide, seeds_sitk, "PNG, JPEG, BMP, MHA, NRRD, NIfTI through SimpleITK: the same calls"),
        Target("result", ("001.json",), run_result, seeds_result, "result files: read_result, read_prediction_file, at_threshold", json_like=True),
        Target("sidecar", ("001.midog.json",), run_sidecar, seeds_sidecar, "result sidecars: read_info, read_recorded", json_like=True),
        Target("inputs", INPUTS_FILES, run_inputs, seeds_inputs, "inputs.json (pipeline.container.find_layout), batch lists, resume fingerprints", json_like=True),
        Target("manifest", MANIFEST_FILES, run_manifest, seeds_manifest, "artefact manifest (load_manifest) and model manifest (pipeline.run.manifest_threshold)", json_like=True),
        Target("labels", LABEL_FILES, run_labels, seeds_labels, "MIDOG.json, ground-truth points, domains: read_ground_truth, read_domains", json_like=True),
    )
}

def seeds_dicom() -> list[tuple[int, bytes]]:
    """One-file DICOM WSI series (a single level) made by wsidicomizer from our own small
    tiled TIFFs, JPEG and uncompressed: the community's converter writes what archives hold."""
    from wsidicomizer import WsiDicomizer

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, compression in enumerate(("jpeg", None)):
            tiff = Path(tmp) / f"{i}.tiff"
            _tiff_file(tiff, compression)
            files = WsiDicomizer.convert(tiff, Path(tmp) / f"s{i}", workers=1, include_label=False, include_overview=False)
            out.append((0, Path(files[0]).read_bytes()))
    return out


def _tiff_file(path: Path, compression: str | None) -> None:
    import tifffile

    tifffile.imwrite(path, _rgb(256, 256), tile=(128, 128), photometric="rgb", compression=compression,
                     resolution=(1 / (SPACING_MM[0] / 10),) * 2, resolutionunit="CENTIMETER")


# A series is a folder of .dcm files; any one of them opens it. The fuzzed file is the
# series' only file (one level), so every byte of it is what open_slide reads.
TARGETS["dicom"] = Target("dicom", ("series/level0.dcm",), run_slide, seeds_dicom,
                          "DICOM WSI series (wsidicom through open_slide): the same calls")


def quiet() -> None:
    """The libraries' own warnings about odd files are expected here, by the thousand."""
    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")


def write_input(target: Target, data: bytes, folder: Path) -> tuple[Path, int]:
    kind, content = target.decode(data)
    path = folder / target.files[kind]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path, kind


def check(name: str, data: bytes, folder: Path | None = None) -> str | None:
    """Run one input through target `name`: None when the outcome rule holds, else what broke
    it ("ExceptionType: message at file:line", or the MidogError that does not name the file)."""
    from midog.errors import MidogError

    target = TARGETS[name]
    own = folder is None
    folder = Path(tempfile.mkdtemp(prefix="fuzz-")) if own else folder
    try:
        path, kind = write_input(target, data, folder)
        try:
            target.run(path, kind)
        except MidogError as exc:
            if path.name not in str(exc) and str(path.parent) not in str(exc):
                return f"MidogError without the file's name: {exc}"
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # the outcome rule's "anything else": a crash
            frames = traceback.extract_tb(exc.__traceback__)
            ours = [f for f in frames if "/midog/" in f.filename or f.filename.endswith("process.py")]
            at = ours[-1] if ours else frames[-1]
            message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            return f"{type(exc).__name__}: {message} at {Path(at.filename).name}:{at.lineno}"
        return None
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            for child in folder.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)


def signature(failure: str) -> str:
    """Findings with the same exception type at the same line are one finding."""
    head, _, where = failure.rpartition(" at ")
    return f"{head.split(':', 1)[0]} at {where}" if where else failure.split(":", 1)[0]


def write_seeds(name: str, folder: Path) -> list[Path]:
    target = TARGETS[name]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (kind, content) in enumerate(target.seeds()):
        path = folder / f"seed-{i:03d}"
        path.write_bytes(target.encode(kind, content))
        paths.append(path)
    return paths


def environment() -> None:
    """What every target process needs: no GPU, one thread per library (two cores, shared)."""
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
