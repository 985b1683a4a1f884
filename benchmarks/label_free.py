"""Label-free ways to meet a new scanner, measured on held-out images (issue 27, item 2).

    python benchmarks/label_free.py threshold --predictions DIR --ground-truth FILE --domains FILE \
        --reference XR-like,S360-like,CS2-like --target GT450-like --unlabelled 025,026,027,028 --scored 029,030,031,032
    python benchmarks/label_free.py stain --weights W.pth --images DIR --ground-truth FILE --domains FILE \
        --reference ... --target ... --scored ... --out DIR

threshold: an operating point from the score distributions alone, no label: the stored point
`--previous` (0.93 for the demo weights) passes a share of the training scanners' candidates
(`--reference` images' predictions, candidates at or above `--floor`); "quantile" picks the
threshold at which the same share of the target scanner's unlabelled images' candidates
passes, "density" the one at which they give as many detections per mm^2. Both assume the
new scanner's slides hold about as many figures (and look-alikes) as the training ones: on
real cohorts mitotic density varies several-fold between tumours, so neither is safe there.

stain: Reinhard colour transfer (mean and standard deviation of each CIELAB channel over
tissue pixels, L < 90, matched to the training scanners' images), written as TIFF copies
with the source's resolution tags, detected with `--weights` and scored at its stored
operating point and at the best threshold, beside the unnormalised images.

Prints F1 at each method's threshold beside the scored images' best (official matching).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from midog.evaluation.ap import curve, sweep  # noqa: E402
from midog.evaluation.io import Candidates, image_stem, read_domains, read_ground_truth, read_predictions, read_spacing_mm  # noqa: E402
from midog.training.calibrate import GRID  # noqa: E402


def f1_curve(gt: dict, cands: dict, names: list[str], grid: np.ndarray) -> np.ndarray:
    return np.nan_to_num(curve(sweep(gt, {n: cands[n] for n in names}, grid).totals(names))[2])


def area_mm2(path: Path) -> float:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        h, w = tif.pages[0].shape[:2]
    return h * w * read_spacing_mm(path) ** 2


def score_threshold(reference: list, target: list, previous: float, grid: np.ndarray, images: Path) -> dict[str, float]:
    """The label-free operating points: (name, candidates) lists of the reference and target images."""
    ref = np.concatenate([c.probability for _, c in reference])
    share = float(np.mean(ref >= previous))
    ref_density = float(np.sum(ref >= previous)) / sum(area_mm2(images / n) for n, _ in reference)
    tgt = np.concatenate([c.probability for _, c in target])
    tgt_area = sum(area_mm2(images / n) for n, _ in target)
    quantile = grid[int(np.argmin([abs(np.mean(tgt >= t) - share) for t in grid]))]
    density = grid[int(np.argmin([abs(np.sum(tgt >= t) / tgt_area - ref_density) for t in grid]))]
    return {"quantile": float(quantile), "density": float(density), "share": share, "density_per_mm2": ref_density}


# --- Reinhard colour transfer in CIELAB (D65) -----------------------------------------

_M = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]])
_WHITE = np.array([0.95047, 1.0, 1.08883])


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    c = rgb.astype(np.float64) / 255
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = c @ _M.T / _WHITE
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    xyz = np.where(f > 6 / 29, f**3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _WHITE
    c = xyz @ np.linalg.inv(_M).T
    c = np.where(c > 0.0031308, 1.055 * np.clip(c, 0, None) ** (1 / 2.4) - 0.055, 12.92 * c)
    return np.clip(np.round(c * 255), 0, 255).astype(np.uint8)


def lab_stats(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = rgb_to_lab(rgb).reshape(-1, 3)
    tissue = lab[lab[:, 0] < 90]
    return tissue.mean(0), tissue.std(0)


def reinhard(rgb: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    lab = rgb_to_lab(rgb)
    m, s = lab_stats(rgb)
    return lab_to_rgb((lab - m) / np.maximum(s, 1e-6) * std + mean)


def normalised_copy(src: Path, dst: Path, mean: np.ndarray, std: np.ndarray) -> None:
    import tifffile

    with tifffile.TiffFile(src) as tif:
        page = tif.pages[0]
        rgb = page.asarray()[..., :3]
        res = (page.tags["XResolution"].value, page.tags["YResolution"].value)
        unit = page.tags["ResolutionUnit"].value
    tifffile.imwrite(dst, reinhard(rgb, mean, std), photometric="rgb", compression="zlib", resolution=res, resolutionunit=unit, metadata=None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("method", choices=("threshold", "stain"))
    p.add_argument("--predictions", type=Path)
    p.add_argument("--weights", type=Path)
    p.add_argument("--images", type=Path, help="folder of the images (default: beside --ground-truth)")
    p.add_argument("--ground-truth", type=Path, required=True)
    p.add_argument("--domains", type=Path, required=True)
    p.add_argument("--reference", required=True, help="comma-separated training scanners")
    p.add_argument("--target", required=True)
    p.add_argument("--unlabelled", default="", help="comma-separated image stems of the target used without labels")
    p.add_argument("--scored", required=True, help="comma-separated image stems of the target that are scored")
    p.add_argument("--reference-predictions", type=Path, default=None, help="predictions of the reference images (default --predictions)")
    p.add_argument("--reference-images", type=Path, default=None)
    p.add_argument("--floor", type=float, default=0.05)
    p.add_argument("--previous", type=float, default=0.93)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    images = args.images or args.ground_truth.parent
    gt = read_ground_truth(args.ground_truth).points
    domains = read_domains(args.domains)
    by_stem = {image_stem(n): n for n in gt}
    scored = [by_stem[s] for s in args.scored.split(",")]
    grid = GRID[GRID >= args.floor - 1e-9]
    refs = set(args.reference.split(","))

    def floored(found: dict) -> dict:
        return {by_stem.get(s, s + ".tiff"): Candidates(c.points[c.probability >= args.floor], c.probability[c.probability >= args.floor],
                                                        c.named_mitotic[c.probability >= args.floor]) for s, c in found.items()}

    if args.method == "threshold":
        cands = floored(read_predictions(args.predictions))
        ref_found = floored(read_predictions(args.reference_predictions)) if args.reference_predictions else cands
        ref_dom = read_domains(args.reference_images / "domains.json") if args.reference_images else domains
        ref_images = args.reference_images or images
        reference = [(n, c) for n, c in ref_found.items() if ref_dom.get(n) in refs]
        target = [(by_stem[s], cands[by_stem[s]]) for s in args.unlabelled.split(",")]
        t = score_threshold(reference, target, args.previous, grid, ref_images)
        # the target's own area must come from its own folder
        tgt = np.concatenate([c.probability for _, c in target])
        tgt_area = sum(area_mm2(images / n) for n, _ in target)
        t["density"] = float(grid[int(np.argmin([abs(np.sum(tgt >= x) / tgt_area - t["density_per_mm2"]) for x in grid]))])
        f1 = f1_curve(gt, cands, scored, np.union1d(grid, [args.previous]))
        g = np.union1d(grid, [args.previous])
        at = lambda x: f1[int(np.argmin(np.abs(g - x)))]  # noqa: E731
        b = int(np.argmax(f1))
        print(f"{args.target}: reference {len(reference)} images, share of candidates >= {args.previous} {t['share']:.3f}, "
              f"{t['density_per_mm2']:.1f}/mm^2; target {len(target)} unlabelled images; scored {len(scored)} "
              f"({sum(len(gt[n]) for n in scored)} figures)")
        print(f"  stored {args.previous:.2f}: F1 {at(args.previous):.3f}; quantile {t['quantile']:.2f}: F1 {at(t['quantile']):.3f}; "
              f"density {t['density']:.2f}: F1 {at(t['density']):.3f}; best {f1[b]:.3f} at {g[b]:.2f}")
        return 0

    from midog.detector import Detector

    args.out.mkdir(parents=True, exist_ok=True)
    ref_images = [n for n, d in domains.items() if d in refs]
    stats = np.array([np.concatenate(lab_stats(_read(images / n))) for n in ref_images])
    mean, std = stats[:, :3].mean(0), stats[:, 3:].mean(0)
    detector = Detector.from_weights(args.weights, device="cpu")
    g = np.union1d(grid, [args.previous])
    for label, folder in (("unnormalised", images), ("Reinhard", args.out)):
        cands = {}
        for n in scored:
            if folder is args.out:
                normalised_copy(images / n, args.out / n, mean, std)
            found = detector.detect(folder / n, min_score=args.floor)
            mm = found.xy_mm
            cands[n] = Candidates(np.column_stack([mm, np.zeros(len(mm))]), found.scores.astype(float), np.ones(len(mm), bool))
        f1 = f1_curve(gt, cands, scored, g)
        b = int(np.argmax(f1))
        i = int(np.argmin(np.abs(g - args.previous)))
        print(f"{args.target} {label}: F1 at {args.previous:.2f} {f1[i]:.3f}, best {f1[b]:.3f} at {g[b]:.2f} ({len(scored)} images)")
    return 0


def _read(path: Path) -> np.ndarray:
    import tifffile

    return tifffile.imread(path)[..., :3]


if __name__ == "__main__":
    raise SystemExit(main())
