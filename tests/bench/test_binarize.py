"""DIBCO metrics against figures worked out by hand, the page generator's masks, and
``hanrt eval --task binarize`` end to end on generated pages."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from hanrt_bench.binarize import (binarize, binary_psnr, drd, evaluate_binarization, f_measure, load_pages,
                                  pseudo_f_measure, summarize, summary_markdown)

pytest.importorskip("skimage")


def test_metrics_of_a_perfect_page():
    gt = np.zeros((16, 16), bool)
    gt[4:9, 3:12] = True
    assert f_measure(gt, gt) == 100.0 and pseudo_f_measure(gt, gt) == 100.0
    assert binary_psnr(gt, gt) == math.inf and drd(gt, gt) == 0.0


def test_f_measure_and_psnr_by_hand():
    gt = np.zeros((8, 8), bool)
    gt[0, :5] = True  # 5 ink pixels
    pred = np.zeros((8, 8), bool)
    pred[0, :3] = True  # 3 found
    pred[7, 7] = True  # 1 false ink
    # R = 3/5, P = 3/4 -> F = 2 * .6 * .75 / 1.35
    assert f_measure(pred, gt) == pytest.approx(100 * 0.9 / 1.35)
    # 3 pixels differ of 64 -> 10 log10(64 / 3)
    assert binary_psnr(pred, gt) == pytest.approx(10 * math.log10(64 / 3))
    # a 1-pixel line is its own skeleton: pseudo-recall 3/5 too
    assert pseudo_f_measure(pred, gt) == pytest.approx(100 * 0.9 / 1.35)
    # thick strokes: the skeleton is found whole though the edges are missed
    gt2 = np.zeros((20, 20), bool)
    gt2[5:12, 2:18] = True
    core = np.zeros_like(gt2)
    core[7:10, 2:18] = True
    assert pseudo_f_measure(core, gt2) > f_measure(core, gt2) + 20


def test_drd_by_hand():
    # reciprocal distances in a 5x5 window: 4 x 1, 4 x 1/sqrt2, 4 x 1/2, 8 x 1/sqrt5, 4 x 1/sqrt8
    total = 4 + 4 / math.sqrt(2) + 4 / 2 + 8 / math.sqrt(5) + 4 / math.sqrt(8)
    gt = np.zeros((8, 8), bool)
    gt[3, 3] = True  # one non-uniform 8x8 block: NUBN = 1
    pred = gt.copy()
    pred[3, 4] = True  # false ink next to the true ink pixel: its other 23 neighbours are background
    assert drd(pred, gt) == pytest.approx(1 - 1 / total)
    miss = np.zeros_like(gt)  # the ink pixel missed: no other ink in its window
    assert drd(miss, gt) == pytest.approx(0.0)
    gt3 = np.zeros((16, 8), bool)
    gt3[2, 2] = gt3[10, 2] = True  # two non-uniform blocks
    pred3 = gt3.copy()
    pred3[2, 3] = True
    assert drd(pred3, gt3) == pytest.approx((1 - 1 / total) / 2)


def test_shapes_must_match():
    with pytest.raises(ValueError, match="differ"):
        f_measure(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    from hanrt_bench.docpages import available_fonts, write_pages

    try:
        available_fonts()
    except FileNotFoundError:
        pytest.skip("no page fonts installed")
    d = tmp_path_factory.mktemp("pages")
    write_pages(d, 2, 7, masks=True, width=320, height=360)
    return d


def test_generated_pages_are_deterministic_and_their_masks_exact(pages, tmp_path):
    from hanrt_bench.docpages import make_page, write_pages

    a, m, rec = make_page(7, width=320, height=360)
    b, m2, _ = make_page(7, width=320, height=360)
    assert np.array_equal(a, b) and np.array_equal(m, m2) and 0.005 < m.mean() < 0.5
    # the generator's own binarization of its page at full resolution is good but not perfect
    # (stains, show-through, noise), and the mask is where the dark pixels are
    grey = a.mean(axis=2)
    assert grey[m].mean() < grey[~m].mean() - 40
    meta = json.loads((pages / "pages.json").read_text())
    assert [p["file"] for p in meta["pages"]] == ["page_00007.png", "page_00008.png"]
    assert meta["fonts"] and all("license" in f for f in meta["fonts"])
    loaded = load_pages(pages)
    assert len(loaded) == 2 and np.array_equal(loaded[0].gt, m[:360, :320])


def test_bicubic_loses_to_full_resolution(pages):
    ps = load_pages(pages)
    rows = evaluate_binarization(ps, {"nearest": lambda lr: np.repeat(np.repeat(lr, 4, 0), 4, 1)})
    s = {(r["condition"], r["method"]): r for r in summarize(rows)}
    assert set(c for c, _ in s) == {"full", "bicubic", "nearest"}
    for m in ("otsu", "sauvola"):
        assert s["full", m]["fm"] > s["bicubic", m]["fm"]
        assert s["full", m]["drd"] < s["bicubic", m]["drd"]


def test_binarize_refuses_unknown_methods():
    with pytest.raises(ValueError, match="otsu, sauvola"):
        binarize(np.zeros((4, 4, 3), np.uint8), "niblack")


def test_cli_binarize(pages, tmp_path, capsys, tiny_onnx):
    from hanrt.cli import main

    out = tmp_path / "ev"
    assert main(["eval", "--task", "binarize", str(pages), "--models", str(tiny_onnx), "--backend", "ort-cpu",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "full resolution (upper bound) | Otsu" in text and "Sauvola" in text
    summ = json.loads((out / "summary.json").read_text())
    assert {s["condition"] for s in summ["summary"]} == {"full", "bicubic", tiny_onnx.stem}
    assert (out / "per_page.csv").read_text().count("\n") == 1 + 2 * 3 * 2
    from PIL import Image

    with Image.open(out / "compare.jpg") as im:
        assert im.size == (4 * 320 + 3 * 6, 240 + 18)


def test_cli_binarize_with_a_self_ensemble(pages, tmp_path, capsys, tiny_onnx):
    from hanrt.cli import main

    out = tmp_path / "ev"
    assert main(["eval", "--task", "binarize", str(pages), "--models", f"{tiny_onnx}, {tiny_onnx} x4",
                 "--backend", "ort-cpu", "-o", str(out)]) == 0
    summ = json.loads((out / "summary.json").read_text())
    assert {s["condition"] for s in summ["summary"]} == {"full", "bicubic", tiny_onnx.stem, f"{tiny_onnx.stem} x4"}
    f = {(s["condition"], s["method"]): s["fm"] for s in summ["summary"]}
    assert f[tiny_onnx.stem, "otsu"] != f[f"{tiny_onnx.stem} x4", "otsu"]  # the passes change the pages
    assert f"| {tiny_onnx.stem} x4, 4-pass ensemble | Otsu |" in capsys.readouterr().out
    assert main(["eval", "--task", "binarize", str(pages), "--models", f"{tiny_onnx} x3"]) == 2
    assert "self-ensemble" in capsys.readouterr().err


def test_cli_binarize_bad_folder(tmp_path, capsys):
    from hanrt.cli import main

    rc = main(["eval", "--task", "binarize", str(tmp_path)])
    assert rc != 0 and "images/" in capsys.readouterr().err


def test_pipeline_example_binarizes_every_page(pages, tmp_path, tiny_onnx):
    """examples/binarize_scans.py: pages streamed through hanrt.pipeline, binarized in the sink."""
    import importlib.util
    from pathlib import Path

    from PIL import Image

    spec = importlib.util.spec_from_file_location(
        "binarize_scans", Path(__file__).resolve().parents[2] / "examples" / "binarize_scans.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "masks"
    assert mod.main([str(pages / "images"), str(out), "--model", str(tiny_onnx), "--shrink",
                     "--backend", "ort-cpu"]) == 0
    got = sorted(p.name for p in out.iterdir())
    assert got == sorted(p.name for p in (pages / "images").iterdir())
    with Image.open(out / got[0]) as im:
        m = np.asarray(im)
    assert m.shape == (360, 320) and set(np.unique(m)) == {0, 255}


def test_clean_scans_are_the_pages_before_the_scanner(tmp_path):
    from hanrt_bench.docpages import CLEAN_DIR, IMAGES_DIR, available_fonts, make_page, make_page_pair, write_pages

    try:
        available_fonts()
    except FileNotFoundError:
        pytest.skip("no page fonts installed")
    deg, clean, mask, rec = make_page_pair(9, width=320, height=360)
    a, m, rec2 = make_page(9, width=320, height=360)
    assert np.array_equal(a, deg) and np.array_equal(m, mask) and rec == rec2  # same draws
    diff = np.abs(deg.astype(int) - clean.astype(int))
    assert 0.5 < diff.mean() < 15  # blur, noise and JPEG apart, the same page
    # the clean scan binarizes at least as well: the scanner's blur and noise are what hurt
    assert f_measure(binarize(clean), mask) >= f_measure(binarize(deg), mask) - 0.5
    write_pages(tmp_path, 1, 9, clean=True, width=320, height=360)
    got = np.asarray(Image.open(tmp_path / CLEAN_DIR / "page_00009.png"))
    assert np.array_equal(got, clean)
    assert np.array_equal(np.asarray(Image.open(tmp_path / IMAGES_DIR / "page_00009.png")), deg)


def test_pages_with_clean_scans_add_the_clean_condition(tmp_path):
    from hanrt_bench.docpages import available_fonts, write_pages

    try:
        available_fonts()
    except FileNotFoundError:
        pytest.skip("no page fonts installed")
    write_pages(tmp_path, 2, 11, masks=True, clean=True, width=320, height=360)
    ps = load_pages(tmp_path)
    assert all(p.clean is not None and p.clean.shape == p.rgb.shape for p in ps)
    rows = evaluate_binarization(ps, {})
    s = {(r["condition"], r["method"]): r for r in summarize(rows)}
    assert [c for c, m in s if m == "otsu"] == ["full", "clean", "bicubic"]
    assert "clean scan" in summary_markdown(summarize(rows))
    # a clean scan of the wrong size is named
    Image.new("RGB", (100, 100)).save(tmp_path / "clean" / "page_00011.png")
    with pytest.raises(Exception, match="clean scan 100x100"):
        load_pages(tmp_path)
