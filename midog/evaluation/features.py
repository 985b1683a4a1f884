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
from ..errors import MidogError
from ..slides.wsi import OPENSLIDE_SUFFIXES

IMAGE_SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".mha", ".mhd"} | OPENSLIDE_SUFFIXES


def sample_origins(width: int, height: int, n: int, size: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(x, y) of `n` patches at uniform random positions inside the image; an axis shorter
    than a patch gives 0 (the patch is padded as the detector pads its tiles), so every
    image contributes the same number of patches."""
    ys = rng.integers(0, max(height, size) - size + 1, size=n)
    xs = rng.integers(0, max(width, size) - size + 1, size=n)
    return [(int(x), int(y)) for x, y in zip(xs, ys)]


def encode(encoder, patches: np.ndarray, config: DetectorConfig = REFERENCE, device: str = "cpu") -> np.ndarray:
    """(n, 512) globally average-pooled c5 features of uint8 patches, normalised as the
    detector normalises its tiles."""
    import torch

    from ..detector.tiles import Normalizer

    with torch.no_grad():
        c5 = encoder(Normalizer(config, device)(torch.from_numpy(np.ascontiguousarray(patches)).to(device)))
    return c5.mean(dim=(2, 3)).cpu().numpy()


def extract_features(
    encoder,
    images: Sequence[Path],
    patches_per_image: int = 10,
    seed: int = 0,
    config: DetectorConfig = REFERENCE,
    device: str = "cpu",
) -> tuple[np.ndarray, list[str]]:
    """Features of `patches_per_image` random patches per image, and each row's image name.
    Images are read through the detector's `open_slide`: only the patches are decoded."""
    from ..slides.readers import open_slide
    from ..detector.tiles import read_tile

    rng = np.random.default_rng(seed)
    feats, names = [], []
    for path in images:
        with open_slide(path) as slide:
            origins = sample_origins(slide.width, slide.height, patches_per_image, config.tile_size, rng)
            # In batches: ResNet activations of 512 px patches take ~100 MB each.
            for start in range(0, len(origins), config.batch_size):
                chunk = origins[start : start + config.batch_size]
                patches = np.stack([read_tile(slide, x, y, config) for x, y in chunk])
                feats.append(encode(encoder, patches, config, device))
        names += [path.name] * len(origins)
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
    from ..network.retinanet import load_model

    if patches_per_image < 1:
        raise MidogError(f"--patches-per-image must be at least 1, got {patches_per_image}")
    images = list_images(Path(images_dir), domains)
    from ..config import with_normalisation

    model, meta = load_model(weights, device=device)
    # Features of the input the model was trained on (a weak baseline sees pixel / 255).
    config = with_normalisation(REFERENCE, meta)
    features, names = extract_features(model.encoder, images, patches_per_image, seed, config, device=device)
    embedding = project_umap(features, seed)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    title = f"Encoder features (ResNet18 c5, pooled): {len(images)} images x {patches_per_image} patches"
    plot_embedding(embedding, [domains[n] for n in names], output, title)
    return embedding
