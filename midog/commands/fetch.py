"""`midog fetch [NAME...]`: download and verify the published artefacts; `--list` shows them."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..detector.weights import Artefact, select, fetch_all, git_blob_sha1, load_manifest, midog_home
from ..detector.weights import __doc__ as weights_doc


def status(artefact: Artefact, root: Path) -> str:
    dest = artefact.path(root)
    if not dest.is_file():
        return "missing"
    return "verified" if git_blob_sha1(dest) == artefact.blob else "MISMATCH"


def _run(args: argparse.Namespace) -> int:
    root = Path(args.root) if args.root else midog_home()
    if args.list:
        artefacts = select(load_manifest(args.manifest, root=root), args.names)
        for a in artefacts:
            size = "?" if a.size is None else str(a.size)
            print(f"{a.name:<15} {status(a, root):<9} {a.dest:<32} size={size:<9} blob={a.blob}")
            print(f"{'':<15} {a.url}")
        return 0
    fetched = fetch_all(
        args.names or None,
        root,
        manifest=args.manifest,
        force=args.force,
        progress=not args.no_progress,
        timeout=args.timeout,
    )
    for name, path in fetched.items():
        print(f"{name}: {path} (verified)")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fetch",
        help="download and verify the published weights, test image and expected outputs",
        description=weights_doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="artefacts to fetch (default: all in the manifest)")
    p.add_argument("--root", default=None, metavar="DIR",
                   help="directory the manifest's destinations are relative to (default: $MIDOG_HOME, else ~/.cache/midog; now "
                   f"{midog_home()})")
    p.add_argument("--manifest", default=None, metavar="FILE",
                   help="artefact manifest (default: DIR/weights/manifest.json when present, else the one shipped with midog)")
    p.add_argument("--force", action="store_true", help="download even when a verified file is present")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--timeout", type=float, default=60, metavar="S", help="network timeout in seconds (default: 60)")
    p.add_argument("--list", action="store_true", help="list the artefacts and whether each is present and verified")
    p.set_defaults(run=_run)
