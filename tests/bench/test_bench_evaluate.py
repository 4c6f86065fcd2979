"""hanrt eval: dataset layouts made in the test from real photo crops, scores, outputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from hanrt.errors import InputError
from hanrt_bench.evaluate import Column, crop_sheet, evaluate, load_dataset, write_outputs
from hanrt_bench.quality import bicubic_down, bicubic_up, modcrop, psnr_y, ssim_y


def test_hr_only_folder(hr_folder, hr_crops):
    name, imgs = load_dataset(str(hr_folder), 4)
    assert name == "TinySet" and [i.name for i in imgs] == ["img0", "img1", "img2"]
    assert all(i.lr is None for i in imgs)
    assert imgs[2].hr.shape == modcrop(hr_crops[2], 4).shape == (60, 60, 3)


def test_hr_lr_pairs_div2k_layout(tmp_path, hr_crops):
    root = tmp_path / "Pairs"
    (root / "HR").mkdir(parents=True)
    (root / "LR_bicubic" / "X4").mkdir(parents=True)
    for i, im in enumerate(hr_crops[:2]):
        Image.fromarray(im).save(root / "HR" / f"{i:04d}.png")
        Image.fromarray(bicubic_down(im, 4)).save(root / "LR_bicubic" / "X4" / f"{i:04d}x4.png")
    _, imgs = load_dataset(str(root), 4)
    assert len(imgs) == 2 and all(i.lr is not None for i in imgs)
    assert imgs[0].lr.shape[0] * 4 == imgs[0].hr.shape[0]


def test_srf_layout(tmp_path, hr_crops):
    d = tmp_path / "Set5" / "image_SRF_4"
    d.mkdir(parents=True)
    im = modcrop(hr_crops[0], 4)
    Image.fromarray(im).save(d / "img_001_SRF_4_HR.png")
    Image.fromarray(bicubic_down(im, 4)).save(d / "img_001_SRF_4_LR.png")
    name, imgs = load_dataset(str(tmp_path / "Set5"), 4)
    assert name == "Set5" and imgs[0].name == "img_001_SRF_4" and imgs[0].lr is not None


def test_bad_datasets(tmp_path, hr_crops):
    with pytest.raises(InputError, match="neither E1 nor a folder"):
        load_dataset(str(tmp_path / "nope"), 4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        load_dataset(str(tmp_path / "empty"), 4)
    bad = tmp_path / "bad"
    (bad / "HR").mkdir(parents=True)
    (bad / "LR").mkdir()
    Image.fromarray(hr_crops[0]).save(bad / "HR" / "a.png")
    Image.fromarray(hr_crops[0][:10, :10]).save(bad / "LR" / "a.png")  # not HR/4
    with pytest.raises(InputError, match="not HR/4"):
        load_dataset(str(bad), 4)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read image"):
        load_dataset(str(junk), 4)
    deep = tmp_path / "deep"
    deep.mkdir()
    Image.fromarray(np.full((8, 8), 1000, np.uint16)).save(deep / "g16.png")
    with pytest.raises(InputError, match="16-bit images are not part"):
        load_dataset(str(deep), 4)


def test_dataset_images_are_read_upright(tmp_path, hr_crops):
    """HR images go through hanrt's reader: the EXIF orientation is applied."""
    d = tmp_path / "Rot"
    d.mkdir()
    im = Image.fromarray(hr_crops[0][:40, :64])
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(d / "r.jpg", exif=exif, quality=95)
    _, imgs = load_dataset(str(d), 4)
    assert imgs[0].hr.shape == (64, 40, 3)


def test_evaluate_scores_and_outputs(hr_folder, tmp_path, tiny_onnx):
    pytest.importorskip("onnxruntime")
    from hanrt.upscaler import Upscaler

    _, imgs = load_dataset(str(hr_folder), 4)
    with Upscaler(tiny_onnx, backend="ort-cpu", tile=0) as whole, \
            Upscaler(tiny_onnx, backend="ort-cpu", tile=8, margin=2) as tiled:
        cols = [Column("fp32 whole", whole.upscale, precision="fp32", tiles=lambda h, w: whole.plan(h, w).count),
                Column("fp32 tiled", tiled.upscale, precision="fp32", tiled=True,
                       tiles=lambda h, w: tiled.plan(h, w).count)]
        res = evaluate("TinySet", imgs, cols, scale=4, model="tiny", crops_dir=tmp_path / "crops")
    r0 = res.per_image[0]
    hr = imgs[0].hr
    assert r0["bicubic psnr"] == pytest.approx(psnr_y(bicubic_up(bicubic_down(hr, 4), 4), hr, shave=4))
    assert r0["bicubic ssim"] == pytest.approx(ssim_y(bicubic_up(bicubic_down(hr, 4), 4), hr, shave=4))
    assert r0["fp32 whole tiles"] == 1 and r0["fp32 tiled tiles"] > 1
    assert 20 < r0["fp32 tiled vs whole"] < float("inf")  # tiling changes HAN's output, a little
    summ = {r["column"]: r for r in res.summary()}
    assert set(summ) == {"bicubic", "fp32 whole", "fp32 tiled", "fp32 tiled vs whole"}
    assert summ["bicubic"]["psnr"] == pytest.approx(np.mean([r["bicubic psnr"] for r in res.per_image]))
    files = write_outputs(res, tmp_path)
    with open(files["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and float(rows[1]["fp32 whole psnr"]) == pytest.approx(res.per_image[1]["fp32 whole psnr"])
    data = json.loads(files["json"].read_text())
    assert data["quality"]["bicubic"] == pytest.approx(summ["bicubic"]["psnr"])
    assert "| fp32 tiled |" in files["md"].read_text()
    sheets = sorted((tmp_path / "crops").glob("*.png"))
    assert [p.stem for p in sheets] == ["img0", "img1", "img2"]
    with Image.open(sheets[0]) as im:
        assert im.size[0] > 3 * 64


def test_crop_sheet_panels(photo):
    hr = photo[:100, :120]
    sheet = crop_sheet("x", hr, [("a", hr), ("b", hr)], size=40, zoom=2)
    assert sheet.size[0] == 3 * (80 + 4) + 4


def test_e1_bicubic_reference():
    """The built-in set reproduces the documented bicubic x4 figure (28.03 dB / 0.7598)."""
    pytest.importorskip("skimage")
    name, imgs = load_dataset("E1", 4)
    assert name == "E1" and len(imgs) == 12
    ps = [psnr_y(bicubic_up(bicubic_down(i.hr, 4), 4), i.hr, shave=4) for i in imgs]
    assert np.mean(ps) == pytest.approx(28.03, abs=0.01)
