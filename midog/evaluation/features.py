"""A map of the scanner domains in feature space (the MIDOG paper's Figure 3).

Random 512 px patches of each image go through the detector's encoder; the ResNet18 c5
map (512 channels) is averaged over space, and UMAP projects the vectors to 2-D. If the
domain-adversarial training worked, scanners overlap instead of forming islands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..config import REFERENCE, DetectorConfig
from ..errors import ImageError, MidogError

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".mha", ".mhd"}


def read_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 pixels of an image, via SimpleITK (as Grand Challenge reads them)."""
    import SimpleITK as sitk

    from ..slide import to_rgb_uint8

    path = Path(path)
    try:
        pixels = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError:
        raise ImageError(path, "cannot read image (not an image, or damaged)") from None
    return to_rgb_uint8(pixels, path)


def sample_patches(pixels: np.ndarray, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(n, size, size, 3) patches at uniform random positions; small images are padded white
    (the slide background) so every image contributes the same number of patches."""
    h, w = pixels.shape[:2]
    if h < size or w < size:
        pad = ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0))
        pixels = np.pad(pixels, pad, constant_values=255)
        h, w = pixels.shape[:2]
    ys = rng.integers(0, h - size + 1, size=n)
    xs = rng.integers(0, w - size + 1, size=n)
    return np.stack([pixels[y : y + size, x : x + size] for y, x in zip(ys, xs)])


def encode(encoder, patches: np.ndarray, config: DetectorConfig = REFERENCE, device: str = "cpu") -> np.ndarray:
    """(n, 512) globally average-pooled c5 features of uint8 patches, normalised as in training."""
    import torch

    mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=device).view(1, 3, 1, 1)
    x = torch.from_numpy(np.ascontiguousarray(patches)).to(device).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        c5 = encoder((x - mean) / std)
    return c5.mean(dim=(2, 3)).cpu().numpy()


def extract_features(
    encoder,
    images: Sequence[Path],
    patches_per_image: int = 10,
    seed: int = 0,
    config: DetectorConfig = REFERENCE,
    device: str = "cpu",
) -> tuple[np.ndarray, list[str]]:
    """Features of `patches_per_image` random patches per image, and each row's image name."""
    rng = np.random.default_rng(seed)
    feats, names = [], []
    for path in images:
        patches = sample_patches(read_rgb(path), patches_per_image, config.tile_size, rng)
        # In batches: ResNet activations of 512 px patches take ~100 MB each.
        for start in range(0, len(patches), config.batch_size):
            feats.append(encode(encoder, patches[start : start + config.batch_size], config, device))
        names += [path.name] * len(patches)
    return np.concatenate(feats), names


def project_umap(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, 2) UMAP embedding."""
    import warnings

    import umap

    n = len(features)
    if n < 3:
        raise MidogError(f"UMAP needs at least 3 feature vectors, got {n} (use more images or --patches-per-image)")
    with warnings.catch_warnings():
        # umap warns that a fixed random_state disables parallelism: reproducibility is the point.
        warnings.simplefilter("ignore", UserWarning)
        # Spectral initialisation fails on tiny inputs; random init works at any size.
        reducer = umap.UMAP(n_neighbors=min(15, n - 1), random_state=seed, init="spectral" if n > 50 else "random")
        return reducer.fit_transform(features)


def plot_embedding(embedding: np.ndarray, scanners: Sequence[str], path: str | Path, title: str) -> None:
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from ..config import MIDOG_SCANNERS

    fig = Figure(figsize=(7, 6), dpi=120, layout="constrained")
    ax = fig.add_subplot()
    present = set(scanners)
    order = [s for s in MIDOG_SCANNERS if s in present] + sorted(present - set(MIDOG_SCANNERS))
    tab = colormaps["tab10"]
    labels = np.asarray(scanners)
    for i, scanner in enumerate(order):
        pts = embedding[labels == scanner]
        ax.scatter(pts[:, 0], pts[:, 1], s=14, alpha=0.75, color=tab(i % 10), label=f"{scanner} ({len(pts)})", edgecolors="none")
    ax.set(xlabel="UMAP 1", ylabel="UMAP 2", title=title)
    ax.legend(fontsize=8, markerscale=1.5)
    fig.savefig(path)


def list_images(images_dir: Path, domains: Mapping[str, str]) -> list[Path]:
    """Images of the folder that the domains file names (others have no scanner to colour by)."""
    if not images_dir.is_dir():
        raise MidogError(f"{images_dir}: images folder not found")
    files = sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    chosen = [p for p in files if p.name in domains]
    if not chosen:
        raise MidogError(f"{images_dir}: none of its {len(files)} images is listed in the domains file")
    return chosen


def feature_map(
    images_dir: str | Path,
    weights: str | Path,
    domains: Mapping[str, str],
    output: str | Path,
    patches_per_image: int = 10,
    seed: int = 0,
    device: str = "cpu",
) -> np.ndarray:
    """Encoder features -> UMAP -> PNG coloured by scanner; returns the embedding."""
    from ..network import load_model

    if patches_per_image < 1:
        raise MidogError(f"--patches-per-image must be at least 1, got {patches_per_image}")
    images = list_images(Path(images_dir), domains)
    model, _ = load_model(weights, device=device)
    features, names = extract_features(model.encoder, images, patches_per_image, seed, device=device)
    embedding = project_umap(features, seed)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    title = f"Encoder features (ResNet18 c5, pooled): {len(images)} images x {patches_per_image} patches"
    plot_embedding(embedding, [domains[n] for n in names], output, title)
    return embedding
