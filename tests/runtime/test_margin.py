"""The tiling margin is a measured property of each model: explicit > recorded in the model > default."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from hanrt.cli import main
from hanrt.errors import ModelError, UsageError
from hanrt.model_info import (DEFAULT_MARGIN, METADATA_KEY, ModelInfo, describe_margin, read_model_info,
                              read_onnx_metadata, resolve_margin)
from hanrt.upscaler import Upscaler

pytest.importorskip("onnxruntime")


def _with_margin(src, tmp_path, margin):
    """A copy of the graph ``src`` whose description records ``margin`` (None: as it was)."""
    pytest.importorskip("onnx")
    from hanrt_export.metadata import update_model_info

    dst = tmp_path / f"m{margin}.onnx"
    shutil.copyfile(src, dst)
    if margin is not None:
        update_model_info(dst, margin=margin)
    return dst


def test_old_descriptions_read_as_not_measured(tiny_onnx):
    info = read_model_info(tiny_onnx)
    assert "margin" not in json.loads(read_onnx_metadata(tiny_onnx)[METADATA_KEY])  # written before the field
    assert info.margin is None
    assert resolve_margin(None, info) == (DEFAULT_MARGIN, "default")
    assert ModelInfo.from_json(json.dumps({"scale": 4})).margin is None


def test_margin_round_trips_and_is_validated():
    info = ModelInfo(scale=4, margin=3)
    back = ModelInfo.from_json(info.to_json())
    assert back.margin == 3 and back == info
    assert info.metadata_props()["hanrt.margin"] == "3"
    assert ModelInfo(scale=4).metadata_props()["hanrt.margin"] == "not measured"
    for bad in (-1, 2.5, "4", True):
        with pytest.raises(ModelError, match="margin"):
            ModelInfo.from_json(json.dumps({"scale": 4, "margin": bad}))


def test_resolution_order():
    recorded = ModelInfo(scale=4, margin=4)
    assert resolve_margin(6, recorded) == (6, "explicit")
    assert resolve_margin(0, recorded) == (0, "explicit")  # 0 is asked for, not "unset"
    assert resolve_margin(None, recorded) == (4, "model")
    assert resolve_margin(None, ModelInfo(scale=4)) == (DEFAULT_MARGIN, "default")
    assert describe_margin(4, "model") == "4 (measured, recorded in the model)"
    assert describe_margin(8, "default") == "8 (default: not measured for this model)"


def test_update_changes_only_the_metadata(tiny_onnx, tmp_path):
    onnx = pytest.importorskip("onnx")
    before = onnx.load(str(tiny_onnx))
    path = _with_margin(tiny_onnx, tmp_path, 5)
    after = onnx.load(str(path))
    assert after.graph.SerializeToString() == before.graph.SerializeToString()  # weights byte-identical
    for a, b in zip(before.graph.initializer, after.graph.initializer, strict=True):
        assert a.raw_data == b.raw_data
    assert (after.ir_version, after.producer_name, after.producer_version) == \
        (before.ir_version, before.producer_name, before.producer_version)
    assert list(after.opset_import) == list(before.opset_import)
    old, new = read_model_info(tiny_onnx), read_model_info(path)
    assert new.margin == 5 and new.with_(margin=None) == old
    assert read_onnx_metadata(path)["hanrt.margin"] == "5"
    assert [p for p in tmp_path.iterdir()] == [path]  # no temporary left beside it


def test_update_refuses_a_graph_without_description(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from hanrt_export.metadata import update_model_info

    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    p = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(g), str(p))
    data = p.read_bytes()
    with pytest.raises(ModelError, match="no hanrt description"):
        update_model_info(p, margin=2)
    assert p.read_bytes() == data


@pytest.mark.parametrize("recorded, asked, expect, source", [
    (None, None, DEFAULT_MARGIN, "default"),
    (3, None, 3, "model"),
    (3, 6, 6, "explicit"),
    (None, 2, 2, "explicit"),
])
def test_upscaler_resolves_the_margin(tiny_onnx, tmp_path, caplog, recorded, asked, expect, source):
    path = _with_margin(tiny_onnx, tmp_path, recorded)
    with caplog.at_level(logging.DEBUG, logger="hanrt.upscaler"):
        with Upscaler(path, backend="ort-cpu", tile=48, margin=asked) as up:
            assert (up.margin, up.margin_source) == (expect, source)
            plan = up.plan(100, 100)
            assert plan.margin == expect  # the plan tiles with it
            assert up.upscale(np.zeros((40, 52, 3), np.uint8)).shape == (160, 208, 3)
    assert f"tiling margin {describe_margin(expect, source)}" in caplog.text


def test_recorded_margin_too_large_for_the_tile_is_explained(tiny_onnx, tmp_path):
    path = _with_margin(tiny_onnx, tmp_path, 12)
    with pytest.raises(UsageError, match=r"margin 12 \(measured, recorded in the model\) leaves no core"):
        Upscaler(path, backend="ort-cpu", tile=24)


def test_cli_upscale_and_info_use_the_recorded_margin(tiny_onnx, tmp_path, capsys, caplog):
    from PIL import Image

    path = _with_margin(tiny_onnx, tmp_path, 3)
    img = tmp_path / "in.png"
    Image.fromarray(np.full((40, 40, 3), 100, np.uint8)).save(img)
    for extra, expect in (([], "3 (measured, recorded in the model)"), (["--margin", "5"], "5 (asked for)")):
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="hanrt.upscaler"):
            assert main(["upscale", str(img), "-o", str(tmp_path / "out.png"), "--overwrite", "--model", str(path),
                         "--backend", "ort-cpu", "--tile", "24", *extra]) == 0
        assert f"tiling margin {expect}" in caplog.text
    capsys.readouterr()
    assert main(["info", str(path)]) == 0
    assert "margin       3 (measured, recorded in the model)" in capsys.readouterr().out
    assert main(["info", str(tiny_onnx)]) == 0
    assert f"margin       {DEFAULT_MARGIN} (default: not measured for this model)" in capsys.readouterr().out
    assert main(["info", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["model_info"]["margin"] == 3


def test_the_bundled_graphs_record_their_tiling_study():
    """Every bundled model was studied: its graphs record the margin, or why none met the rule."""
    from hanrt.models import BUNDLED, bundled_dir

    d = bundled_dir()
    for stem in (b.stem for b in BUNDLED.values()):
        infos = [read_model_info(d / f"{stem}{v}.onnx") for v in ("", "_uint8", "_fp16", "_int8")]
        recorded = {(i.margin, i.margin_note) for i in infos}
        assert len(recorded) == 1, (stem, recorded)  # siblings share the weights
        margin, note = recorded.pop()
        # a margin, with a note only when no margin studied met the 50 dB criterion; or none, and why
        assert (isinstance(margin, int) and (not note or "keeps tiles within 50 dB" in note)) or \
            (margin is None and "no margin" in note), (stem, margin, note)


def test_a_studied_model_without_a_margin_says_so(tiny_onnx, tmp_path, capsys):
    pytest.importorskip("onnx")
    from hanrt_bench.tiling_study import no_margin_note, write_margin, write_margin_note
    from hanrt_export.metadata import update_model_info

    path, sib = tmp_path / "m.onnx", tmp_path / "m_sibling.onnx"
    for p in (path, sib):  # two graphs of the same weights
        shutil.copyfile(tiny_onnx, p)
        update_model_info(p, source_sha256="a" * 64)
    note = no_margin_note({(64, 0): 40.0, (64, 12): 49.1, (128, 12): 49.0, (128, 0): 41.0},
                          tiles=(64, 128), margins=(0, 12), what="4 held-out E1 photos")
    assert note == ("the tiling study found no margin of 0, 12 that meets its rule; at margin 12 the worst image "
                    "is 49.1 / 49.0 dB of whole-image output at tiles 64 / 128, on 4 held-out E1 photos")
    write_margin_note(path, note, [sib])
    for p in (path, sib):
        info = read_model_info(p)
        assert info.margin is None and info.margin_note == note
        assert read_onnx_metadata(p)["hanrt.margin"] == "none met the tiling study's rule"
    assert resolve_margin(None, info) == (DEFAULT_MARGIN, "default")
    assert main(["info", str(path)]) == 0
    assert f"margin       {DEFAULT_MARGIN} (default: {note})" in capsys.readouterr().out
    write_margin(path, 4, [])  # a later study that finds one clears the note
    assert (read_model_info(path).margin, read_model_info(path).margin_note) == (4, "")


def test_a_margin_below_the_criterion_carries_its_figures(tiny_onnx, tmp_path, capsys):
    """A model whose tiles cannot reach 50 dB at any margin records the plateau margin and says so."""
    pytest.importorskip("onnx")
    from hanrt_bench.tiling_study import criterion_note, write_margin

    path = tmp_path / "m.onnx"
    shutil.copyfile(tiny_onnx, path)
    worst = {(64, 0): 44.0, (64, 6): 48.4, (64, 12): 48.1, (128, 0): 46.0, (128, 6): 48.9, (128, 12): 49.4}
    note = criterion_note(worst, 6, tiles=(64, 128), margins=(0, 6, 12), what="4 E1 photos")
    write_margin(path, 6, [], note)
    info = read_model_info(path)
    assert (info.margin, info.margin_note) == (6, note) and read_onnx_metadata(path)["hanrt.margin"] == "6"
    assert resolve_margin(None, info) == (6, "model")
    assert main(["info", str(path)]) == 0
    assert f"margin       6 (measured, recorded in the model; {note})" in capsys.readouterr().out


def test_the_margin_travels_with_engines_and_triton_repositories(tiny_onnx, tmp_path):
    """An engine's sidecar and a Triton repository carry the ModelInfo, margin included."""
    import hashlib

    from hanrt.backends import tensorrt as E
    from hanrt.triton_repo import config_text, triton_model

    info = ModelInfo(scale=4, margin=3)
    fp = E.Fingerprint.make(target=E.Target("10.3.0", "Orin", (8, 7)), onnx_sha256="ab" * 32, info=info,
                            options=E.BuildOptions(profiles=tuple(E.profiles_from_tiles([(96, 96)], 4))))
    data = b"ENGINE"
    plan = E.write_engine(tmp_path / "han.plan", data,
                          E.Sidecar(fp, info, len(data), hashlib.sha256(data).hexdigest(), "han.onnx"))
    assert E.read_sidecar(plan).model_info.margin == 3
    assert read_model_info(plan).margin == 3
    m = triton_model(_with_margin(tiny_onnx, tmp_path, 3))
    assert m.info.margin == 3 and '\\"margin\\": 3' in config_text(m)


def test_stream_and_upscale_parse_the_same_margin_default(tiny_onnx, tmp_path):
    """``hanrt stream`` and ``hanrt upscale`` build their Upscaler from the same options: --margin
    left out is the model's recorded margin, given it wins."""
    import argparse

    from hanrt.cli import stream as cli_stream
    from hanrt.cli._common import upscaler_from_args

    path = _with_margin(tiny_onnx, tmp_path, 3)
    p = argparse.ArgumentParser()
    cli_stream.add_model_options(p)
    for argv, expect in (([], (3, "model")), (["--margin", "1"], (1, "explicit"))):
        args = p.parse_args(["--model", str(path), "--backend", "ort-cpu", *argv])
        with upscaler_from_args(args) as up:
            assert (up.margin, up.margin_source) == expect
    helps = {a.dest: a.help for a in p._actions}
    assert "measured for the model" in helps["margin"]
