"""`midog fetch` against a local HTTP server: verification, atomicity, offline errors. No internet."""

from __future__ import annotations

import http.server
import json
import os
import re
import socket
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest

from midog.commands import cli
from midog.errors import MidogError
from midog.detector.weights import PROJECT_ROOT, Artefact, fetch, fetch_all, git_blob_sha1, load_manifest

GOOD = b"published bytes\n" * 1000
CORRUPT = bytes(b ^ 0x01 for b in GOOD[:1]) + GOOD[1:]  # same size, one byte differs


def blob_of(data: bytes) -> str:
    """What `git hash-object` says for `data` (fed on stdin, so no file is left behind)."""
    out = subprocess.run(["git", "hash-object", "--stdin"], input=data, check=True, capture_output=True)
    return out.stdout.decode().strip()


class _Handler(http.server.BaseHTTPRequestHandler):
    hits: Counter = Counter()

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.hits[self.path] += 1
        if self.path == "/good":
            self._send(GOOD, len(GOOD))
        elif self.path == "/corrupt":
            self._send(CORRUPT, len(CORRUPT))
        elif self.path == "/short":
            # Announce more than is sent, then close (HTTP/1.0 handler closes after the response).
            self._send(GOOD[: len(GOOD) // 2], len(GOOD))
        else:
            self.send_error(404)

    def _send(self, body: bytes, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.hits
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def root(tmp_path, server):
    """A project root in tmp_path with a manifest pointing at the local server."""
    base, hits = server
    hits.clear()
    good_blob = blob_of(GOOD)
    entries = [
        {"name": "good", "dest": "weights/good.bin", "url": f"{base}/good", "size": len(GOOD), "blob": good_blob},
        {"name": "nosize", "dest": "test/nosize.bin", "url": f"{base}/good", "size": None, "blob": good_blob},
        {"name": "corrupt", "dest": "weights/corrupt.bin", "url": f"{base}/corrupt", "size": None, "blob": good_blob},
        {"name": "short", "dest": "weights/short.bin", "url": f"{base}/short", "size": None, "blob": good_blob},
        {"name": "missing", "dest": "weights/missing.bin", "url": f"{base}/nothing", "size": None, "blob": good_blob},
    ]
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "manifest.json").write_text(json.dumps({"artefacts": entries}))
    return tmp_path


def artefact(root: Path, name: str) -> Artefact:
    return {a.name: a for a in load_manifest(root=root)}[name]


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "manifest.json")


def test_git_blob_sha1_matches_git(tmp_path):
    for data in (b"", b"hello\n", os.urandom(3 * (1 << 20) + 17)):  # empty, small, several chunks
        p = tmp_path / "x"
        p.write_bytes(data)
        assert git_blob_sha1(p) == blob_of(data)


def test_good_download_is_verified(root, server):
    path = fetch(artefact(root, "good"), root, progress=False)
    assert path == root / "weights" / "good.bin"
    assert path.read_bytes() == GOOD
    assert leftovers(root) == ["weights/good.bin"]
    # Unknown size and a missing parent directory are fine too.
    assert fetch(artefact(root, "nosize"), root, progress=False).read_bytes() == GOOD


def test_verified_file_is_not_downloaded_again(root, server):
    _, hits = server
    a = artefact(root, "good")
    fetch(a, root, progress=False)
    fetch(a, root, progress=False)
    assert hits["/good"] == 1
    fetch(a, root, progress=False, force=True)
    assert hits["/good"] == 2


def test_wrong_file_on_disk_is_replaced(root, server):
    dest = root / "weights" / "good.bin"
    dest.write_bytes(CORRUPT)
    fetch(artefact(root, "good"), root, progress=False)
    assert dest.read_bytes() == GOOD


def test_corrupted_download_is_rejected(root, server):
    a = artefact(root, "corrupt")
    with pytest.raises(MidogError) as exc:
        fetch(a, root, progress=False)
    msg = str(exc.value)
    assert "corrupt.bin" in msg and a.blob in msg and blob_of(CORRUPT) in msg
    assert leftovers(root) == []


def test_size_mismatch_is_rejected(root, server):
    a = artefact(root, "good")
    a = Artefact(a.name, a.dest, a.url, a.blob, size=len(GOOD) + 1)
    with pytest.raises(MidogError, match="size"):
        fetch(a, root, progress=False)
    assert leftovers(root) == []


def test_cut_short_download_is_rejected(root, server):
    a = artefact(root, "short")
    with pytest.raises(MidogError) as exc:
        fetch(a, root, progress=False)
    assert a.url in str(exc.value)
    assert leftovers(root) == []


def test_http_error(root, server):
    with pytest.raises(MidogError, match="404"):
        fetch(artefact(root, "missing"), root, progress=False)
    assert leftovers(root) == []


def test_connection_refused_says_offline(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    a = Artefact("w", "w.bin", f"http://127.0.0.1:{port}/w", "0" * 40)
    with pytest.raises(MidogError, match=r"could not fetch w from .*offline\?"):
        fetch(a, tmp_path, progress=False, timeout=2)
    assert list(tmp_path.iterdir()) == []


def test_fetch_all_tries_everything_and_reports_all_failures(root, server):
    with pytest.raises(MidogError) as exc:
        fetch_all(root=root, progress=False)
    msg = str(exc.value)
    for name in ("corrupt", "short", "missing"):
        assert f"  {name}:" in msg
    assert "  good:" not in msg
    assert (root / "weights" / "good.bin").read_bytes() == GOOD
    assert fetch_all(["good"], root=root, progress=False) == {"good": root / "weights" / "good.bin"}
    with pytest.raises(MidogError, match="unknown"):
        fetch_all(["nope"], root=root)


def test_local_copy_is_used_only_when_it_verifies(root, server):
    _, hits = server
    src = root / "local.bin"
    a = artefact(root, "good")
    a = Artefact(a.name, a.dest, a.url, a.blob, a.size, local="local.bin")
    src.write_bytes(GOOD)
    fetch(a, root, progress=False)
    assert hits["/good"] == 0 and a.path(root).read_bytes() == GOOD
    src.write_bytes(CORRUPT)
    fetch(a, root, progress=False, force=True)
    assert hits["/good"] == 1 and a.path(root).read_bytes() == GOOD


def test_cli_list_and_fetch(root, server, monkeypatch, capsys):
    # Only this module's subcommand: the test must not depend on the other stages importing.
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["midog.commands.fetch"])
    assert cli.main(["fetch", "--list", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^good\s+missing\s+weights/good.bin", out, re.M)
    assert cli.main(["fetch", "good", "--no-progress", "--root", str(root)]) == 0
    assert cli.main(["fetch", "--list", "--root", str(root)]) == 0
    assert re.search(r"^good\s+verified\s", capsys.readouterr().out, re.M)
    assert cli.main(["fetch", "--no-progress", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("midog fetch: error: 3 of 5") and "short" in err


def test_real_manifest():
    artefacts = load_manifest()
    assert [a.name for a in artefacts] == ["weights", "test-image", "expected-2021", "expected-2022"]
    for a in artefacts:
        assert re.fullmatch(r"[0-9a-f]{40}", a.blob)
        assert re.fullmatch(r"https://github\.com/DeepMicroscopy/MIDOG_reference_docker/raw/[0-9a-f]{40}/\S+", a.url)
        assert not Path(a.dest).is_absolute()
    assert {a.name: a.dest for a in artefacts}["weights"] == "weights/RetinaNetDA.pth"


def test_real_manifest_local_copies_match_when_present():
    checked = 0
    for a in load_manifest():
        if a.local and (PROJECT_ROOT / a.local).is_file():
            assert git_blob_sha1(PROJECT_ROOT / a.local) == a.blob, a.local
            checked += 1
    if not checked:
        pytest.skip("no shared reference copies in this checkout")



def test_midog_home_default_and_overrides(tmp_path, monkeypatch):
    from midog.detector.weights import midog_home

    monkeypatch.delenv("MIDOG_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert midog_home() == tmp_path / "user" / ".cache" / "midog"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert midog_home() == tmp_path / "xdg" / "midog"
    monkeypatch.setenv("MIDOG_HOME", str(tmp_path / "home"))
    assert midog_home() == tmp_path / "home"


def test_cli_fetch_writes_to_midog_home_by_default(root, server, monkeypatch, capsys):
    """No --root: downloads go to $MIDOG_HOME, not the checkout (an installed package has none)."""
    home = root / "home"
    monkeypatch.setenv("MIDOG_HOME", str(home))
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["midog.commands.fetch"])
    assert cli.main(["fetch", "good", "--no-progress", "--manifest", str(root / "weights" / "manifest.json")]) == 0
    assert (home / "weights" / "good.bin").read_bytes() == GOOD
    assert not (root / "weights" / "good.bin").exists()


def test_artefacts_are_read_from_home_then_the_checkout(tmp_path, server, monkeypatch):
    """Readers look in $MIDOG_HOME first, then in the checkout; a verified copy in the
    checkout is copied into $MIDOG_HOME instead of downloaded again."""
    import midog.detector.weights as fetch_mod

    base, hits = server
    hits.clear()
    checkout, home = tmp_path / "checkout", tmp_path / "home"
    (checkout / "weights").mkdir(parents=True)
    monkeypatch.setattr(fetch_mod, "checkout_root", lambda: checkout)
    monkeypatch.setenv("MIDOG_HOME", str(home))
    assert fetch_mod.artefact_file("weights/good.bin") == home / "weights" / "good.bin"  # in neither: where fetch would put it
    (checkout / "weights" / "good.bin").write_bytes(GOOD)
    assert fetch_mod.artefact_file("weights/good.bin") == checkout / "weights" / "good.bin"
    a = Artefact("good", "weights/good.bin", f"{base}/good", blob_of(GOOD))
    assert fetch(a, progress=False) == home / "weights" / "good.bin"
    assert hits["/good"] == 0 and (home / "weights" / "good.bin").read_bytes() == GOOD
    assert fetch_mod.artefact_file("weights/good.bin") == home / "weights" / "good.bin"


def test_packaged_manifest_is_the_default(tmp_path):
    """Without a manifest beside the root (an installed package fetching into the cache),
    the manifest shipped with the package is used."""
    assert [a.name for a in load_manifest(root=tmp_path)] == [a.name for a in load_manifest()]
