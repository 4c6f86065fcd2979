"""`hanrt export` end to end, in-process: success output, bad inputs -> one line, nonzero exit, no file."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from PIL import Image

from hanrt.cli import main
from hanrt.model_info import read_model_info


@pytest.mark.parametrize("io,csam", [("float", "conv3d"), ("uint8", "conv2d")])
def test_export_cli_writes_a_verified_graph(tmp_path, tiny_checkpoint, capsys, io, csam):
    out = tmp_path / "m.onnx"
    rc = main(["export", "--checkpoint", str(tiny_checkpoint), "--output", str(out), "--io", io, "--csam", csam])
    assert rc == 0
    text = capsys.readouterr().out
    assert "parity max abs" in text and f"io={io}" in text
    info = read_model_info(out)
    assert info.io == io and info.csam == csam and len(info.source_sha256) == 64


def _bad(tmp_path: Path, kind: str, tiny_checkpoint: Path) -> Path:
    p = tmp_path / "bad.pt"
    if kind == "missing":
        return tmp_path / "nope.pt"
    if kind == "truncated":
        data = tiny_checkpoint.read_bytes()
        p.write_bytes(data[: len(data) // 3])
    elif kind == "image":
        p = tmp_path / "img.jpg"
        Image.new("RGB", (16, 16), (200, 10, 10)).save(p)
    elif kind == "code":
        class Evil:
            def __reduce__(self):
                return (print, ("pwned",))
        p.write_bytes(pickle.dumps({"state_dict": Evil()}))
    elif kind == "other_arch":
        torch.save({"conv_first.weight": torch.zeros(64, 3, 3, 3), "RRDB_trunk.0.w": torch.zeros(1)}, p)
    elif kind == "scale":
        sd = torch.load(tiny_checkpoint, weights_only=True)["state_dict"]
        sd["tail.0.0.weight"] = torch.zeros(7 * 8, 8, 3, 3)
        sd["tail.0.0.bias"] = torch.zeros(7 * 8)
        torch.save(sd, p)
    return p


@pytest.mark.parametrize("kind", ["missing", "truncated", "image", "code", "other_arch", "scale"])
def test_bad_checkpoints(tmp_path, tiny_checkpoint, capsys, kind):
    bad = _bad(tmp_path, kind, tiny_checkpoint)
    out = tmp_path / "out.onnx"
    rc = main(["export", "--checkpoint", str(bad), "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3
    assert len(err) == 1 and err[0].startswith("hanrt: error:")
    assert "pwned" not in capsys.readouterr().out
    assert not out.exists()
    assert not [f for f in tmp_path.iterdir() if f.suffix == ".tmp" or f.name.startswith(".out")]


def test_unwritable_output(tmp_path, tiny_checkpoint, capsys):
    rc = main(["export", "--checkpoint", str(tiny_checkpoint), "--output", str(tmp_path / "x" / "y.onnx")])
    assert rc == 4
    assert "does not exist" in capsys.readouterr().err


def test_existing_output_needs_overwrite(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--output", str(out)]) == 4
    assert out.read_bytes() == b"old"
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "--output", str(out), "--overwrite"]) == 0
    assert read_model_info(out).scale == 4


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "export" in capsys.readouterr().out
