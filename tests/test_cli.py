"""Command-line edges: the duplicate-stem refusal of `midog detect` and the training
command's help and argument errors (one clear line, no traceback, non-zero status)."""

from __future__ import annotations

from pathlib import Path

import pytest

from midog.commands.cli import main
from midog.pipeline.image import output_paths
from midog.errors import MidogError


def test_output_paths():
    assert output_paths([Path("a/x.tiff")], Path("out.json")) == [Path("out.json")]
    assert output_paths([Path("a/x.tiff"), Path("b/y.svs")], Path("res")) == [Path("res/x.json"), Path("res/y.json")]
    assert output_paths([Path("a/x.tiff"), Path("b/y.svs")], None) == [Path("x.json"), Path("y.json")]


def test_output_paths_refuses_images_that_share_a_stem():
    with pytest.raises(MidogError, match="share a file name stem"):
        output_paths([Path("a/x.tiff"), Path("b/x.tiff")], Path("res"))
    with pytest.raises(MidogError, match="share a file name stem"):
        output_paths([Path("a/x.tiff"), Path("a/x.png")], None)


def test_detect_with_shared_stems_stops_before_any_work(tmp_path, random_weights, capsys):
    images = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        images.append(tmp_path / folder / "slide.tiff")
        images[-1].write_bytes(b"not read: the names alone are refused")
    out = tmp_path / "out"
    code = main(["detect", *map(str, images), "--weights", str(random_weights), "-o", str(out), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2  # a usage error: refused before any work
    assert err.strip().splitlines() == [
        "midog detect: error: several input images share a file name stem; their outputs would overwrite each other"
    ]
    assert not out.exists() or not any(out.iterdir())


def test_train_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in ("--out", "--domain-weight", "--select", "--resume", "--backbone", "--epochs"):
        assert option in text
    assert "SPEC" not in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--patch-size", "100"], "at least 224 px"),
        ([], "no labelled training images"),  # an empty MIDOG.json
    ],
)
def test_train_argument_errors_are_one_line(tmp_path, capsys, args, message):
    midog_json = tmp_path / "MIDOG.json"
    midog_json.write_text('{"images": [], "annotations": [], "categories": []}')
    code = main(["train", str(midog_json), "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("midog train: error:") and message in lines[0], err


def test_train_missing_file_is_named(tmp_path, capsys):
    missing = tmp_path / "MIDOG.json"
    assert main(["train", str(missing), "--out", str(tmp_path / "run")]) == 1
    assert capsys.readouterr().err.strip() == f"midog train: error: {missing}: file not found"


def test_train_rejects_an_unknown_choice(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "x.json", "--out", "run", "--amp", "fp8"])
    assert exc.value.code == 2
    assert "--amp" in capsys.readouterr().err


def test_a_file_that_is_no_checkpoint_is_one_line(tmp_path, capsys):
    """torch's own message is pages long and suggests weights_only=False: never shown."""
    image = tmp_path / "x.tiff"
    image.write_bytes(b"not read: the weights are refused first")
    notes = tmp_path / "README.md"
    notes.write_text("# not weights\n")
    assert main(["detect", str(image), "--weights", str(notes), "-o", str(tmp_path / "o.json"), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"midog detect: error: {notes}: not a PyTorch weights file"]
    assert "weights_only" not in err


def test_quiet_hides_every_progress_bar(tmp_path, vectors_dir, vector_weights, capfd):
    small = vectors_dir / "synthC_512x512.tiff"
    images = [tmp_path / "a.tiff", tmp_path / "b.tiff"]  # two: the images' bar as well as the tiles'
    for image in images:
        image.write_bytes(small.read_bytes())
    args = ["detect", *map(str, images), "--weights", str(vector_weights), "-o", f"{tmp_path}/", "--device", "cpu"]
    assert main(args) == 0
    assert "%|" in capfd.readouterr().err  # without --quiet, tqdm draws its bars (also into a pipe)
    assert main([*args, "-q"]) == 0
    err = capfd.readouterr().err
    assert "%|" not in err and "tile/s" not in err and "image/s" not in err, err
    assert "error" not in err
