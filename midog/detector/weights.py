"""Download the published reference artefacts (weights, test image, expected outputs).

Every file is pinned to a commit of the reference repository and verified by its git
blob hash (`git hash-object`), so a file on disk is either exactly the published one or
is not trusted. Downloads go to a hidden temporary file beside `<dest>` and are renamed into place only after
verification: an interrupted or corrupted download never leaves a file that looks complete.

Where they go: the folder named by the MIDOG_HOME environment variable, else the user
cache folder ($XDG_CACHE_HOME/midog, by default ~/.cache/midog); `--root DIR` puts them
under DIR instead (build.sh uses the project folder). Readers look in that folder first,
then in a source checkout's own weights/ and test/ folders.

Entries with a `local` path (copies that a development tree may hold beside the project)
are copied from there when that file exists and has the right blob hash, so they can be
had offline; otherwise they are downloaded like the rest.

    midog fetch                 # everything in the artefact manifest
    midog fetch weights         # one artefact
    midog fetch --list          # what is present and verified
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .. import __version__
from ..atomic import atomic_path
from ..errors import MidogError

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # midog/
PROJECT_ROOT = PACKAGE_DIR.parent  # the source checkout, when running from one
MANIFEST_NAME = Path("weights") / "manifest.json"
CHUNK = 1 << 20


def midog_home() -> Path:
    """Where `midog fetch` puts downloads: $MIDOG_HOME, else the user cache folder."""
    if os.environ.get("MIDOG_HOME"):
        return Path(os.environ["MIDOG_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "midog"


def checkout_root() -> Path | None:
    """The source checkout the package runs from (editable install or PYTHONPATH), else None."""
    return PROJECT_ROOT if (PROJECT_ROOT / "pyproject.toml").is_file() else None


def packaged_file(name: str) -> Path:
    """A file shipped with the package (the checkout's weights/ folder, installed as the
    package data folder midog/weights/): the demo model, the artefact manifest."""
    installed = PACKAGE_DIR / "weights" / name
    if installed.is_file() or checkout_root() is None:
        return installed
    return PROJECT_ROOT / "weights" / name


def artefact_file(dest: str) -> Path:
    """Where a fetched artefact is read from: under midog_home(), else in the checkout (where
    `midog fetch --root .` and build.sh put it). When in neither, the midog_home() path, so
    that error messages name where `midog fetch` would put it."""
    home = midog_home() / dest
    checkout = checkout_root()
    if home.is_file() or checkout is None or not (checkout / dest).is_file():
        return home
    return checkout / dest


def published_weights() -> Path:
    """The published reference weights, wherever `midog fetch` (or build.sh) put them."""
    return artefact_file("weights/RetinaNetDA.pth")


@dataclass(frozen=True)
class Artefact:
    name: str
    dest: str  # relative to the project root
    url: str
    blob: str  # git blob SHA-1 of the expected content
    size: int | None = None
    local: str | None = None  # optional offline source, relative to the project root

    def path(self, root: Path) -> Path:
        return Path(root) / self.dest


def git_blob_sha1(path: str | os.PathLike) -> str:
    """The hash `git hash-object` gives for the file, computed in chunks (the weights are ~70 MiB)."""
    path = Path(path)
    digest = hashlib.sha1(b"blob " + str(path.stat().st_size).encode() + b"\0")
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(path: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> list[Artefact]:
    """Artefacts listed in `path`; by default `<root>/weights/manifest.json` when that exists,
    else the manifest shipped with the package."""
    if path is None:
        beside = Path(root) / MANIFEST_NAME if root is not None else None
        path = beside if beside is not None and beside.is_file() else packaged_file(MANIFEST_NAME.name)
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["artefacts"]
        artefacts = [
            Artefact(
                name=e["name"],
                dest=e["dest"],
                url=e["url"],
                blob=e["blob"].lower(),
                size=e.get("size"),
                local=e.get("local"),
            )
            for e in entries
        ]
    except FileNotFoundError:
        raise MidogError(f"{path}: manifest not found") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MidogError(f"{path}: not a valid artefact manifest ({exc!r})") from None
    for a in artefacts:  # JSON gives any type: a name that is an object failed in set() below (fuzzing)
        wrong = [f for f in ("name", "dest", "url", "blob") if not isinstance(getattr(a, f), str)]
        wrong += [] if a.size is None or (isinstance(a.size, int) and not isinstance(a.size, bool)) else ["size"]
        wrong += [] if a.local is None or isinstance(a.local, str) else ["local"]
        if wrong:
            raise MidogError(f"{path}: not a valid artefact manifest (artefact {a.name!r}: {', '.join(wrong)} of the wrong type)")
    names = [a.name for a in artefacts]
    if len(set(names)) != len(names):
        raise MidogError(f"{path}: duplicate artefact names in {names}")
    return artefacts


def is_verified(artefact: Artefact, root: str | os.PathLike | None = None) -> bool:
    root = midog_home() if root is None else root
    dest = artefact.path(Path(root))
    return dest.is_file() and git_blob_sha1(dest) == artefact.blob


def fetch(
    artefact: Artefact,
    root: str | os.PathLike | None = None,
    *,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60,
) -> Path:
    """Make `<root>/<dest>` the verified published file and return its path.

    A destination that already verifies is left alone (no network), unless `force`.
    Raises MidogError when the file cannot be had or does not verify. `root` defaults to
    midog_home().
    """
    root = midog_home() if root is None else Path(root)
    dest = artefact.path(root)
    if not force and is_verified(artefact, root):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as partial:
        local = _verified_local_source(artefact, root)
        if local is not None:
            _copy(local, partial)
        else:
            _download(artefact, partial, progress=progress, timeout=timeout)
        _verify(artefact, partial)
    return dest


def fetch_all(
    names: Iterable[str] | None = None,
    root: str | os.PathLike | None = None,
    *,
    manifest: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60,
) -> dict[str, Path]:
    """Fetch the named artefacts (default: all) under `root` (default midog_home()); try
    every one, then report all failures at once."""
    root = midog_home() if root is None else Path(root)
    artefacts = select(load_manifest(manifest, root=root), names)
    fetched: dict[str, Path] = {}
    failures: list[str] = []
    for artefact in artefacts:
        try:
            fetched[artefact.name] = fetch(artefact, root, force=force, progress=progress, timeout=timeout)
        except MidogError as exc:
            failures.append(f"  {artefact.name}: {exc}")
    if failures:
        raise MidogError(f"{len(failures)} of {len(artefacts)} artefact(s) could not be fetched:\n" + "\n".join(failures))
    return fetched


def select(artefacts: list[Artefact], names: Iterable[str] | None) -> list[Artefact]:
    if names is None:
        return artefacts
    names = list(names)
    if not names:
        return artefacts
    by_name = {a.name: a for a in artefacts}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise MidogError(f"unknown artefact(s) {', '.join(unknown)}; known: {', '.join(by_name)}")
    return [by_name[n] for n in dict.fromkeys(names)]


def _verified_local_source(artefact: Artefact, root: Path) -> Path | None:
    checkout = checkout_root()
    candidates = []
    if artefact.local is not None:
        # Relative to the destination root, or to the checkout when fetching elsewhere.
        candidates += [root / artefact.local] + ([checkout / artefact.local] if checkout else [])
    if checkout is not None and checkout.resolve() != root.resolve():
        candidates.append(checkout / artefact.dest)  # fetched into the checkout before (build.sh)
    for source in candidates:
        # A local copy that differs from the published file is ignored, not trusted.
        if source.is_file() and git_blob_sha1(source) == artefact.blob:
            return source
    return None


def _copy(source: Path, partial: Path) -> None:
    with open(source, "rb") as src, open(partial, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)
        out.flush()
        os.fsync(out.fileno())


def _download(artefact: Artefact, partial: Path, *, progress: bool, timeout: float) -> None:
    from tqdm import tqdm  # only needed when something is actually downloaded

    url = artefact.url
    request = urllib.request.Request(url, headers={"User-Agent": f"midog/{__version__}"})
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with open(partial, "wb") as out, tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=artefact.name,
                disable=not progress,
            ) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                out.flush()
                # The rename that follows must not expose data still only in the page cache.
                os.fsync(out.fileno())
    except urllib.error.HTTPError as exc:
        raise MidogError(f"could not fetch {artefact.name} from {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        if received:
            raise MidogError(
                f"download of {artefact.name} from {url} broke off after {received} bytes: {reason}"
            ) from None
        raise MidogError(f"could not fetch {artefact.name} from {url}: {reason} (offline?)") from None
    except OSError as exc:
        raise MidogError(f"could not write {partial}: {exc}") from None
    # http.client does not raise when the server closes early; compare with the announced length.
    if total is not None and received != total:
        raise MidogError(
            f"download of {artefact.name} from {url} was cut short: got {received} of {total} bytes"
        )


def _verify(artefact: Artefact, partial: Path) -> None:
    actual_size = partial.stat().st_size
    if artefact.size is not None and actual_size != artefact.size:
        raise MidogError(
            f"{artefact.dest}: size mismatch for {artefact.name} from {artefact.url}: "
            f"expected {artefact.size} bytes, got {actual_size}"
        )
    actual = git_blob_sha1(partial)
    if actual != artefact.blob:
        raise MidogError(
            f"{artefact.dest}: blob hash mismatch for {artefact.name} from {artefact.url}: "
            f"expected {artefact.blob}, got {actual}"
        )
