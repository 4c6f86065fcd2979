"""``python -m hanrt_export.bundle --domain document``: card, NOTICE and binarization table."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("skimage")


@pytest.mark.parametrize("no_margin", [False, True], ids=["as-measured", "no-margin-meets-the-rule"])
def test_bundle_a_document_model(tmp_path, tiny_han, monkeypatch, no_margin, caplog):
    from hanrt_bench.docpages import available_fonts, write_pages

    if no_margin:  # the study's verdict forced, to check what the bundle then records
        import hanrt_bench.tiling_study as ts

        monkeypatch.setattr(ts, "choose_margin", lambda *a, **k: None)

    from hanrt_export.bundle import main
    from hanrt_export.checkpoint import save_checkpoint

    try:
        available_fonts()
    except FileNotFoundError:
        pytest.skip("no page fonts installed")
    caplog.set_level("INFO", logger="hanrt_export.bundle")
    pages = tmp_path / "pages"
    restoring = not no_margin  # one case trains on clean scans (--targets), the other on the pages
    write_pages(pages, 1, 3, masks=True, width=256, height=320, clean=restoring)
    ck = tmp_path / "doc.pt"
    # the restoring case's stages record what they trained on (one photo, then the pages): NOTICE
    # credits that photo alone; the other case's stage has no record, so every photo is credited
    record = {}
    if restoring:
        record = {"lineage": [{"step": 3, "config": tiny_han.config.to_dict(),
                               "train_config": {"data": "/w/photos", "lr": 1e-4, "batch": 2, "patch": 8,
                                                "data_files": ["aitzgorri_by_Aitzol_Berasategi.jpg"]}}]}
    train_config = {"data_files": [f.name for f in sorted((pages / "images").iterdir())]} if restoring else {}
    save_checkpoint(tiny_han, ck, step=5, **record, train_config={
                        **train_config, "data": str(pages / "images"), "shrink": [0.7, 1.0],
                                                         "targets": str(pages / "clean") if restoring else None,
                                                         "versions": 2, "lr": 1e-4, "batch": 2, "patch": 8,
                                                         "speed": {"requested": "auto", "mode": "fp32",
                                                                   "step_s": {"fp32": 1.0, "bf16": 2.0}}},
                    history=[{"step": 5, "val_psnr": 30.0, "bicubic_psnr": 29.0}])
    dest = tmp_path / "models"
    assert main([str(ck), "--dest", str(dest), "--name", "doc_x4", "--domain", "document",
                 "--pages", str(pages)]) == 0
    assert {p.name for p in dest.iterdir()} >= {"doc_x4.onnx", "doc_x4_uint8.onnx", "doc_x4.pt",
                                                 "MODEL_CARD_document.md", "NOTICE_document",
                                                 "document_results.json"}
    card = (dest / "MODEL_CARD_document.md").read_text()
    assert "## Binarization of held-out generated pages" in card and "| document x4 | Otsu |" in card
    assert "Training used 1 pages, seeds 3..3" in card and "-> **fp32**" in card
    assert "no real scanned or historical pages" in card
    assert ("learned to **restore**" in card and "--seed 3 --clean`" in card) == restoring
    # the tiling margin was measured on the held-out pages and recorded in both graphs (or, if no
    # margin met the rule, the card and the graphs' margin_note say so)
    from hanrt.model_info import read_model_info

    line = next(x for x in card.splitlines() if x.startswith("Tiling margin:"))
    recorded = {(read_model_info(dest / f).margin, read_model_info(dest / f).margin_note)
                for f in ("doc_x4.onnx", "doc_x4_uint8.onnx")}
    assert len(recorded) == 1
    m, note = recorded.pop()
    assert m is None or not no_margin
    if m is not None:  # with a note (and the card saying so) only when the margin stays below 50 dB
        assert f"**{m}** input pixels" in line
        assert (f"Below the criterion: {note}." in line) if note else ("Below the criterion" not in line)
    else:
        assert "not recorded" in line and "no margin of 0, 2, 4, 6, 8, 12" in note and "1 held-out pages" in note
    assert "1 held-out pages, LR by bicubic /2" in line
    # the bundle log keeps the study's rows, every margin at every tile size
    log = caplog.text
    assert "tiling study, tiled vs whole-image output" in log and "| margin | T=64" in log
    notice = (dest / "NOTICE_document").read_text()
    assert "fonts-dejavu-core" in notice and "Aitzol Berasategi" in notice  # fonts and the parent's photos
    assert ("nasa0@2x.jpg" not in notice and "Nevit Dilmen" not in notice) == restoring
    res = json.loads((dest / "document_results.json").read_text())
    conds = {s["condition"] for s in res["binarize"]["summary"]}
    assert conds == {"full", "bicubic", "photo", "document"} | ({"clean"} if restoring else set())
    assert ("| clean scan, full resolution" in card) == restoring


def test_bundle_refuses_an_unknown_domain(tmp_path, tiny_han):
    from hanrt.errors import HanrtError

    from hanrt_export.bundle import bundle
    from hanrt_export.checkpoint import save_checkpoint

    save_checkpoint(tiny_han, tmp_path / "m.pt")
    with pytest.raises(HanrtError, match="photo, art, document"):
        bundle(tmp_path / "m.pt", tmp_path / "d", domain="drawings")


def test_card_says_how_torch_compile_was_decided():
    from hanrt_export.bundle import _compile_text

    assert "no --compile" in _compile_text({"mode": "fp32"})  # a stage trained before the option
    probed = _compile_text({"compile": "auto", "compiled": True,
                            "compile_probe": {"eager_s": 0.247, "compiled_s": 0.219, "compile_s": 17.1}})
    assert "eager 0.25, compiled 0.22" in probed and "compiling 17 s" in probed and "**compiled**" in probed
    short = _compile_text({"compile": "auto", "compiled": False, "compile_note": "not tried: too short"})
    assert short == "torch.compile (auto): eager, not tried: too short."
    assert _compile_text({"compile": "on", "compiled": True}) == "torch.compile (on): compiled."
