"""The host side of detection: batched post-processing equal to the per-tile one, stored
chunks decoded once and read as tiffslide reads them, reused staging buffers, and the GPU
JPEG path's tile assembly (checked with torchvision's CPU decoder) and its fallback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import tiffslide
import torch

from midog.config import REFERENCE
from midog.detector.feed import prefetch_batches
from midog.detector.tiles import pad_fill, read_tile, tile_origins
from midog.network.anchors import make_anchors
from midog.network.postprocess import batch_tile_boxes, tile_boxes
from midog.slides import gpu_jpeg
from midog.slides.readers import open_slide


def tissue(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth, JPEG-friendly RGB with structure at every scale (exact comparisons need variety)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 60 * np.sin(x / (17 + 5 * c)) * np.cos(y / (23 + 3 * c)) for c in range(3)], -1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("feed")
    pixels = tissue(1300, 1700)
    paths = {"strips": folder / "strips.tiff", "jpeg": folder / "jpeg.tiff", "zlib_tiles": folder / "zlib_tiles.tiff"}
    common = {"photometric": "rgb", "resolution": (4000.0, 4000.0), "resolutionunit": "CENTIMETER", "metadata": None}
    tifffile.imwrite(paths["strips"], pixels, compression="zlib", predictor=2, rowsperstrip=12, **common)
    tifffile.imwrite(paths["jpeg"], pixels, tile=(256, 256), compression="jpeg", compressionargs={"level": 90}, **common)
    tifffile.imwrite(paths["zlib_tiles"], pixels, tile=(256, 256), compression="zlib", **common)
    return paths


def test_batched_post_processing_equals_the_per_tile_one_bit_for_bit():
    anchors = make_anchors()
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(5, len(anchors), 2, generator=g) * 3
    logits[:, ::7, 1] = logits[:, ::7, 0]  # exact ties between the classes
    logits[2] = -20  # a tile without candidates
    deltas = torch.randn(5, len(anchors), 4, generator=g) * 2
    kept = batch_tile_boxes(logits, deltas, anchors, 0.4)
    assert sorted(set(kept.tile.tolist())) == [0, 1, 3, 4]
    assert (np.diff(kept.tile) >= 0).all()
    for i in range(5):
        boxes, scores, classes = tile_boxes(logits[i], deltas[i], anchors, 0.4)
        mine = kept.tile == i
        assert mine.sum() == len(scores)
        np.testing.assert_array_equal(kept.boxes[mine], boxes.numpy())
        np.testing.assert_array_equal(kept.scores[mine], scores.numpy())
        np.testing.assert_array_equal(kept.classes[mine], classes.numpy())
    none = batch_tile_boxes(logits, deltas, anchors, 1.0)
    assert none.boxes.shape == (0, 4) and none.scores.dtype == np.float32


@pytest.mark.parametrize("kind", ["strips", "jpeg", "zlib_tiles"])
def test_chunk_cache_reads_what_tiffslide_reads_and_decodes_each_chunk_once(images, kind):
    path = images[kind]
    reference = tiffslide.TiffSlide(path)
    with open_slide(path, readers=2) as slide:
        cache = slide._chunks
        assert cache is not None
        # Every tile the detector reads, in its row-major order.
        origins = sorted(tile_origins(slide.width, slide.height), key=lambda xy: (xy[1], xy[0]))
        for x, y in origins:
            want = np.asarray(reference.read_region((x, y), 0, (512, 512), as_array=True))[..., :3]
            np.testing.assert_array_equal(read_tile(slide, x, y), want)
        units = -(-slide.height // cache.unit[0]) * -(-slide.width // cache.unit[1])
        assert cache.decoded == units, "each stored strip block or tile decoded exactly once"
        rng = np.random.default_rng(0)
        for _ in range(20):  # odd regions, edges included
            x, y = int(rng.integers(0, slide.width - 1)), int(rng.integers(0, slide.height - 1))
            w, h = int(rng.integers(1, slide.width - x + 1)), int(rng.integers(1, slide.height - y + 1))
            want = np.asarray(reference.read_region((x, y), 0, (w, h), as_array=True))[..., :3]
            np.testing.assert_array_equal(slide.read_region(x, y, w, h), want)
    reference.close()


@pytest.mark.parametrize("predictor", [1, 2])
def test_strips_decoded_in_place_are_tifffiles_pixels(tmp_path, predictor):
    """The MIDOG layout (8-bit RGB deflate strips) is decoded straight into its block
    (`chunks.strip_decoder`), with and without horizontal differencing, a short last strip
    included; the pixels are tifffile's own."""
    from midog.slides.chunks import strip_decoder

    pixels = tissue(611, 733, seed=predictor)
    path = tmp_path / "strips.tiff"
    tifffile.imwrite(path, pixels, compression="zlib", predictor=predictor, rowsperstrip=10, photometric="rgb", metadata=None)
    with tifffile.TiffFile(path) as tif:
        assert strip_decoder(tif.pages[0]) is not None
    with open_slide(path, mpp=0.25, readers=2) as slide:
        assert slide._chunks is not None and slide._chunks._strip_into is not None
        np.testing.assert_array_equal(slide.read_region(0, 0, 733, 611), pixels)
        np.testing.assert_array_equal(slide.read_region(101, 333, 500, 278), pixels[333:, 101:601])


def test_other_layouts_keep_the_general_decoder(tmp_path, images):
    from midog.slides.chunks import strip_decoder

    grey = tmp_path / "grey.tiff"
    tifffile.imwrite(grey, tissue(64, 64)[..., 0], compression="zlib", rowsperstrip=8, metadata=None)
    lzw = tmp_path / "lzw.tiff"
    tifffile.imwrite(lzw, tissue(64, 64), compression="lzw", rowsperstrip=8, photometric="rgb", metadata=None)
    for path in (grey, lzw, images["jpeg"], images["zlib_tiles"]):
        with tifffile.TiffFile(path) as tif:
            assert strip_decoder(tif.pages[0]) is None, path.name


def test_a_damaged_strip_takes_the_general_path_and_names_the_file(tmp_path):
    from midog.errors import ImageError

    path = tmp_path / "damaged.tiff"
    tifffile.imwrite(path, tissue(200, 300), compression="zlib", predictor=2, rowsperstrip=20, photometric="rgb", metadata=None)
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[7], tif.pages[0].databytecounts[7]
    data = bytearray(path.read_bytes())
    data[offset + 2 : offset + count] = bytes(count - 2)  # strip 7's deflate stream wiped (rows 140-159)
    path.write_bytes(bytes(data))
    with open_slide(path, mpp=0.25, readers=1) as slide:
        # Blocks of 6 strips (120 rows): the first block decodes, the second names the file.
        np.testing.assert_array_equal(slide.read_region(0, 0, 300, 100), tissue(200, 300)[:100])
        with pytest.raises(ImageError, match="damaged.tiff"):
            slide.read_region(0, 0, 300, 200)


def test_staging_buffers_are_reused_and_hold_the_tiles(images):
    with open_slide(images["strips"], readers=2) as slide:
        origins = sorted(tile_origins(slide.width, slide.height), key=lambda xy: (xy[1], xy[0]))
        buffers, seen = set(), []
        for chunk, tiles in prefetch_batches(slide, origins, 2, REFERENCE, 2, False):
            buffers.add(tiles.data_ptr())
            for (x, y), tile in zip(chunk, tiles):
                np.testing.assert_array_equal(tile.numpy(), read_tile(slide, x, y))
            seen += chunk
        assert seen == origins
        assert len(buffers) <= 2 + 3 < len(origins) // 2


def test_gpu_decode_falls_back_without_cuda(images):
    assert gpu_jpeg.pick_decoder(torch.device("cpu")) is None
    with open_slide(images["jpeg"]) as slide:
        assert slide.gpu_jpeg_tiles(torch.device("cpu")) is None


def test_jpeg_stream_puts_the_tables_before_the_frame():
    tables = b"\xff\xd8" + b"\xff\xdbTABLES" + b"\xff\xd9"
    tile = b"\xff\xd8" + b"\xff\xc0FRAME\xff\xdaSCAN" + b"\xff\xd9"
    assert gpu_jpeg.jpeg_stream(tables, tile) == b"\xff\xd8\xff\xdbTABLES\xff\xc0FRAME\xff\xdaSCAN\xff\xd9"
    assert gpu_jpeg.jpeg_stream(None, tile) == tile


def test_gpu_tile_assembly_with_the_cpu_decoder_equals_the_cpu_reader(images):
    """The GPU path's stored-tile decoding and assembly, run with torchvision's CPU decoder:
    the same libjpeg-turbo as the CPU reader, so the tiles must be equal to the bit."""
    cpu = torch.device("cpu")
    decoder = ("torchvision", gpu_jpeg.torchvision_decoder(cpu))
    with open_slide(images["jpeg"]) as slide, tifffile.TiffFile(images["jpeg"]) as tif:
        page = tif.pages[0]
        reader = gpu_jpeg.GpuJpegTiles.open(images["jpeg"], page, cpu, decoder, reference=slide.read_region)
        assert reader is not None
        origins = tile_origins(slide.width, slide.height)
        origins.append((1500, 1100))  # past both edges: padded with the fill colour
        batch = reader.read_batch(origins, 512, pad_fill())
        assert batch.shape == (len(origins), 512, 512, 3) and batch.dtype == torch.uint8
        for (x, y), tile in zip(origins, batch):
            np.testing.assert_array_equal(tile.numpy(), read_tile(slide, x, y))
        reader.close()
        # A decoder that reads the colours differently is refused, and the CPU reads instead.
        swapped = ("swapped", lambda streams: [t.flip(0) for t in decoder[1](streams)])
        assert gpu_jpeg.GpuJpegTiles.open(images["jpeg"], page, cpu, swapped, reference=slide.read_region) is None
    with tifffile.TiffFile(images["zlib_tiles"]) as tif:
        assert gpu_jpeg.GpuJpegTiles.open(images["zlib_tiles"], tif.pages[0], cpu, decoder) is None


def test_host_normalisation_gives_the_same_bits_as_the_device_one():
    """The CPU device's readers normalise with numpy (`Normalizer.into`): every uint8 value
    of every channel gives the bits of the torch route (`Normalizer.__call__`)."""
    from midog.detector.tiles import Normalizer

    values = np.arange(256, dtype=np.uint8)
    pattern = np.stack([values, values[::-1], np.roll(values, 7)], -1).reshape(16, 16, 3)
    tile = np.tile(pattern, (32, 32, 1))  # 512 x 512, every value in every channel
    normalizer = Normalizer()
    want = normalizer(torch.from_numpy(tile[None])).permute(0, 2, 3, 1).numpy()[0]
    got = normalizer.into(tile, np.empty(tile.shape, np.float32))
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/device_check.sh runs it on one)")
@pytest.mark.parametrize("fast", [False, True])
def test_cuda_streams_change_no_detection(images, monkeypatch, fast):
    """Copy, network and post-processing on three streams give the detections of one stream,
    to the bit (the same kernels in the same order; only their overlap changes), on strips
    and, in fast mode, on JPEG tiles decoded on the GPU. A random network and a low score
    floor give thousands of candidates, so a missed wait would show."""
    from midog.detector import Detector
    from midog.detector import core
    from midog.network.retinanet import RetinaNetDA

    torch.manual_seed(0)
    detector = Detector(RetinaNetDA().cuda(), fast=fast, batch_size=4, workers=3)
    for kind in ("strips", "jpeg"):
        streamed = detector.detect(images[kind], min_score=0.005)
        monkeypatch.setattr(core.CudaStreams, "for_device", classmethod(lambda cls, device: None))
        serial = detector.detect(images[kind], min_score=0.005)
        monkeypatch.undo()
        assert len(streamed) > 100
        for field in ("boxes", "scores", "classes"):
            assert np.array_equal(getattr(streamed, field), getattr(serial, field)), (kind, field)
