"""The one atomic writer: a failed write leaves the old file and no temporary file."""

from __future__ import annotations

import json
import stat

import pytest

from midog.atomic import atomic_path, write_bytes_atomic, write_json_atomic, write_text_atomic


def test_writes_and_replaces(tmp_path):
    target = tmp_path / "sub" / "a.json"  # the parent folder is created
    write_json_atomic(target, {"x": [1, 2]})
    assert target.read_text() == json.dumps({"x": [1, 2]})
    write_text_atomic(target, "new\n")
    assert target.read_text() == "new\n"
    write_bytes_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]
    # Readable by others, as a plain open() would leave it (mkstemp alone gives 0600).
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            assert tmp.parent == tmp_path and tmp.name.startswith(".a.txt.") and tmp.name.endswith(".tmp")
            raise RuntimeError("writer died")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_keep_extension_lets_matplotlib_pick_the_format(tmp_path):
    from matplotlib.figure import Figure

    target = tmp_path / "plot.png"
    with atomic_path(target, keep_extension=True) as tmp:
        assert tmp.suffix == ".png"
        Figure(figsize=(1, 1)).savefig(tmp)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
