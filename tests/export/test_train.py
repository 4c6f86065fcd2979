"""`hanrt train`: a real (tiny) training run, resume, fine-tune, and the photo fetcher's checks."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from hanrt.cli import main
from hanrt.errors import InputError
from hanrt_export.checkpoint import load_checkpoint
from hanrt_export.data import TRAIN_PHOTOS, fetch_training_photos, notice_text


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    # real photos that are not in the held-out E1 set
    skd = pytest.importorskip("skimage.data")
    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(skd.immunohistochemistry()).save(d / "ihc.png")
    Image.fromarray(skd.retina()[300:800, 300:800]).save(d / "retina.jpg", quality=95)
    return d


def _args(photo_dir, out, *extra):
    return ["train", "--data", str(photo_dir), "--output", str(out), "--resgroups", "1", "--resblocks", "1",
            "--feats", "8", "--reduction", "4", "--batch", "2", "--patch", "8", "--warmup", "2",
            "--val-every", "3", "--save-every", "3", "--threads", "1", *extra]


def test_train_resume_and_finetune(tmp_path, photo_dir, capsys):
    out = tmp_path / "m.pt"
    assert main(_args(photo_dir, out, "--steps", "3")) == 0
    ck = load_checkpoint(out)
    assert ck.meta["step"] == 3 and ck.config.n_feats == 8
    assert np.isfinite(ck.meta["history"][-1]["val_psnr"])
    state = out.with_suffix(".state.pt")
    assert state.exists()
    w3 = ck.model.state_dict()["head.0.weight"].clone()
    # resume continues from step 3 to 6 and changes the weights
    assert main(_args(photo_dir, out, "--steps", "6", "--resume")) == 0
    ck6 = load_checkpoint(out)
    assert ck6.meta["step"] == 6
    assert [h["step"] for h in ck6.meta["history"]] == [3, 6]
    assert not torch.equal(ck6.model.state_dict()["head.0.weight"], w3)
    # fine-tune from a checkpoint keeps its architecture
    ft = tmp_path / "ft.pt"
    assert main(_args(photo_dir, ft, "--steps", "2", "--init", str(out))) == 0
    assert load_checkpoint(ft).config == ck6.config
    text = capsys.readouterr().out
    assert "validation Y-PSNR" in text


def test_train_learns_something(tmp_path, photo_dir):
    """A few dozen steps take a random HAN far closer to the target than at step 0."""
    from hanrt_export.train import TrainConfig, train

    out = tmp_path / "l.pt"
    res = train(TrainConfig(data=str(photo_dir), output=str(out), n_resgroups=1, n_resblocks=1, n_feats=8,
                            reduction=4, steps=40, batch=4, patch=12, warmup=5, lr=2e-3, val_every=20,
                            save_every=40, threads=1))
    first, last = res["history"][0]["val_psnr"], res["history"][-1]["val_psnr"]
    assert last > first + 1.0


def test_train_refuses_bad_data(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "--data", str(empty), "--output", str(tmp_path / "x.pt")]) == 3
    assert "no images" in capsys.readouterr().err
    assert main(["train", "--output", str(tmp_path / "x.pt")]) == 2


def test_resume_without_state_is_refused(tmp_path, photo_dir, capsys):
    assert main(_args(photo_dir, tmp_path / "none.pt", "--resume", "--steps", "2")) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb is not installed")
def test_fetch_refuses_photos_with_wrong_checksum(tmp_path):
    root = tmp_path / "pkg"
    bg = root / "usr/share/backgrounds"
    bg.mkdir(parents=True)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN/control").write_text(
        "Package: fake-wallpapers\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n")
    for ph in TRAIN_PHOTOS:
        Image.new("RGB", (4, 4)).save(bg / ph.file)
    deb = tmp_path / "fake.deb"
    subprocess.run(["dpkg-deb", "-b", str(root), str(deb)], check=True, capture_output=True)
    dest = tmp_path / "dest"
    with pytest.raises(InputError, match="sha256"):
        fetch_training_photos(dest, deb=deb)
    assert not [p for p in dest.iterdir() if p.suffix == ".jpg"]


def test_notice_credits_every_photographer():
    text = notice_text()
    for ph in TRAIN_PHOTOS:
        assert ph.file in text and ph.author in text and ph.license in text
