"""The TensorRT-buildability lint (hanrt_export.trt_lint): each rule on a small hand-made graph,
the graph shapes hanrt used to export (UINT8 Transpose; DequantizeLinear on INT32 biases), the
export gate, ``hanrt lint`` and the bundled graphs."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from onnx import TensorProto as TP  # noqa: E402
from onnx import helper, numpy_helper  # noqa: E402

from hanrt.errors import ModelError  # noqa: E402
from hanrt.model_info import read_model_info  # noqa: E402
from hanrt_export import precision as P  # noqa: E402
from hanrt_export import trt_ops  # noqa: E402
from hanrt_export.trt_lint import RULES, lint, summary  # noqa: E402


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, t, shape=(1, 3, 4, 4)):
    return helper.make_tensor_value_info(name, t, list(shape))


def _rules(model):
    return [(f.rule, f.node, f.tensor) for f in lint(model)]


# --- each rule on a hand-made graph ----------------------------------------------------------

def test_clean_uint8_io_graph_has_no_findings():
    """Cast first then Transpose in; Transpose then Cast last out: what TensorRT accepts."""
    m = _model([helper.make_node("Cast", ["x"], ["xf"], name="cast_in", to=TP.FLOAT),
                helper.make_node("Transpose", ["xf"], ["xt"], name="tin", perm=[0, 3, 1, 2]),
                helper.make_node("Relu", ["xt"], ["r"], name="relu"),
                helper.make_node("Transpose", ["r"], ["rt"], name="tout", perm=[0, 2, 3, 1]),
                helper.make_node("Cast", ["rt"], ["y"], name="cast_out", to=TP.UINT8)],
               [_vi("x", TP.UINT8, (1, 4, 4, 3))], [_vi("y", TP.UINT8, (1, 4, 4, 3))])
    onnx.checker.check_model(m)
    assert lint(m) == []


def test_uint8_transpose_is_caught():
    m = _model([helper.make_node("Transpose", ["x"], ["xt"], name="tin", perm=[0, 3, 1, 2]),
                helper.make_node("Cast", ["xt"], ["y"], name="cast", to=TP.FLOAT)],
               [_vi("x", TP.UINT8, (1, 4, 4, 3))], [_vi("y", TP.FLOAT)])
    got = _rules(m)
    assert ("uint8-io", "tin", "x") in got and ("uint8-io", "tin", "xt") in got
    assert {r for r, _, _ in got} == {"uint8-io"}
    f = lint(m)[0]
    assert "Cast the UINT8 input to float first" in f.fix and "Transpose" in str(f)


def test_uint8_output_must_come_from_a_cast():
    m = _model([helper.make_node("Cast", ["x"], ["xu"], name="cast", to=TP.UINT8),
                helper.make_node("Transpose", ["xu"], ["y"], name="tout", perm=[0, 2, 3, 1])],
               [_vi("x", TP.FLOAT)], [_vi("y", TP.UINT8, (1, 4, 4, 3))])
    assert _rules(m) == [("uint8-io", "cast", "xu"), ("uint8-io", "tout", "y")]


def _qdq_conv(data_type_bias=TP.INT32, zp_value=0, zp_type=TP.INT8, opset=17):
    """x -> Q -> DQ -> Conv(W via DQ, bias via DQ on ``data_type_bias``) -> y"""
    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.int8), "w_q")
    ws = numpy_helper.from_array(np.full((2,), 0.1, np.float32), "w_s")
    wz = numpy_helper.from_array(np.zeros((2,), np.int8), "w_z")
    s = numpy_helper.from_array(np.float32(0.05), "s")
    zdt = np.int8 if zp_type == TP.INT8 else np.uint8
    z = numpy_helper.from_array(np.array(zp_value, zdt), "z")
    inits = [w, ws, wz, s, z]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["wd"], name="dq_w", axis=0)]
    if data_type_bias == TP.INT32:
        inits += [numpy_helper.from_array(np.array([3, -4], np.int32), "b_q"),
                  numpy_helper.from_array(np.full((2,), 0.005, np.float32), "b_s")]
        nodes.append(helper.make_node("DequantizeLinear", ["b_q", "b_s"], ["b"], name="dq_bias", axis=0))
    else:
        inits.append(numpy_helper.from_array(np.array([0.015, -0.02], np.float32), "b"))
    nodes.append(helper.make_node("Conv", ["xd", "wd", "b"], ["y"], name="conv"))
    return _model(nodes, [_vi("x", TP.FLOAT)], [_vi("y", TP.FLOAT, (1, 2, 4, 4))], inits, opset=opset)


def test_symmetric_int8_qdq_with_float_bias_is_clean():
    m = _qdq_conv(TP.FLOAT)
    onnx.checker.check_model(m)
    assert lint(m) == []


def test_dequantize_on_int32_bias_is_caught():
    m = _qdq_conv(TP.INT32)
    onnx.checker.check_model(m)
    fs = lint(m)
    assert [(f.rule, f.node, f.op, f.tensor) for f in fs] == [("dq-type", "dq_bias", "DequantizeLinear", "b_q")]
    assert "INT32" in fs[0].message and "QuantizeBias=False" in fs[0].fix


def test_nonzero_and_uint8_zero_points_are_caught():
    fs = lint(_qdq_conv(TP.FLOAT, zp_value=3))
    assert {(f.rule, f.node) for f in fs} == {("qdq-zero-point", "q"), ("qdq-zero-point", "dq")}
    # asymmetric UINT8 activations (--int8-activations uint8): Q writes UINT8, DQ reads it
    fs = lint(_qdq_conv(TP.FLOAT, zp_value=128, zp_type=TP.UINT8))
    assert {(f.rule, f.node) for f in fs} == {("q-type", "q"), ("dq-type", "dq"), ("qdq-zero-point", "q"),
                                              ("qdq-zero-point", "dq")}
    assert "--int8-activations int8" in next(f.fix for f in fs if f.rule == "dq-type")


def test_zero_point_must_be_constant():
    m = _qdq_conv(TP.FLOAT)
    m.graph.input.append(_vi("zin", TP.INT8, ()))
    m.graph.node[0].input[2] = "zin"
    assert ("qdq-zero-point", "q", "zin") in _rules(m)


def test_unsupported_ops_and_domains_are_caught():
    m = _model([helper.make_node("Det", ["x"], ["d"], name="det"),
                helper.make_node("Gelu", ["x"], ["y"], name="gelu"),  # opset 20: in the table
                helper.make_node("Foo", ["x"], ["z"], name="custom", domain="acme")],
               [_vi("x", TP.FLOAT, (2, 3, 3))], [_vi("d", TP.FLOAT, (2,)), _vi("y", TP.FLOAT, (2, 3, 3)),
                                                  _vi("z", TP.FLOAT, (2, 3, 3))], opset=20)
    m.opset_import.append(helper.make_opsetid("acme", 1))
    got = lint(m)
    assert [(f.rule, f.node) for f in got] == [("unsupported-op", "det"), ("unsupported-op", "custom")]
    assert "listed as unsupported" in got[0].message and "acme::Foo" in got[1].message


def test_unsupported_types_are_caught():
    """MatMul on INT32 (the table: FP32/FP16/BF16 only); Conv straight on INT8 (quantized types
    exist only between Q and DQ)."""
    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.int8), "w")
    m = _model([helper.make_node("MatMul", ["a", "a"], ["mm"], name="mm"),
                helper.make_node("Conv", ["x8", "w"], ["c"], name="conv8")],
               [_vi("a", TP.INT32, (2, 2)), _vi("x8", TP.INT8)],
               [_vi("mm", TP.INT32, (2, 2)), _vi("c", TP.INT8, (1, 2, 4, 4))], [w])
    got = {(f.rule, f.node, f.tensor): f for f in lint(m)}
    assert set(got) == {("unsupported-type", "mm", "a"), ("unsupported-type", "conv8", "x8")}
    assert "between QuantizeLinear and DequantizeLinear" in got[("unsupported-type", "conv8", "x8")].fix


def test_opset_outside_tensorrt_range_is_caught():
    m = _qdq_conv(TP.FLOAT, opset=21)
    assert [(f.rule, f.node) for f in lint(m)] == [("opset", "")]


def test_every_rule_has_a_test_and_the_table_is_data():
    # the rules exercised above are all the lint has
    assert set(RULES) == {"opset", "unsupported-op", "unsupported-type", "uint8-io", "dq-type", "q-type",
                          "qdq-zero-point"}
    assert trt_ops.SUPPORTED["DequantizeLinear"] == {"INT8", "FP8", "INT4"}
    assert "UINT8" in trt_ops.SUPPORTED["Cast"] and "UINT8" not in trt_ops.SUPPORTED["Transpose"]
    assert not set(trt_ops.SUPPORTED) & trt_ops.UNSUPPORTED
    assert "Attention" in trt_ops.UNSUPPORTED  # added in 10.14, after the 10.3 we target


# --- the graph shapes hanrt used to export ------------------------------------------------------

class _OldUint8IO(torch.nn.Module):
    """The pre-fix wrapper: transpose on UINT8, cast; cast to UINT8, then transpose."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        y = self.model(x.permute(0, 3, 1, 2).to(torch.float32))
        return torch.round(torch.clamp(y, 0.0, 255.0)).to(torch.uint8).permute(0, 2, 3, 1)


def test_pre_fix_uint8_graph_is_refused_by_the_export(tmp_path, tiny_han, monkeypatch):
    from hanrt_export import to_onnx

    monkeypatch.setattr(to_onnx, "Uint8IO", _OldUint8IO)
    out = tmp_path / "old_u8.onnx"
    with pytest.raises(ModelError, match=r"TensorRT lint gate failed, old_u8.onnx was not written.*uint8-io"):
        to_onnx.export_onnx(tiny_han, out, options=to_onnx.ExportOptions(io="uint8"))
    assert list(tmp_path.iterdir()) == []


def test_uint8_graph_casts_at_the_edges(tiny_onnx_uint8):
    """After onnxslim, the final file: input -> Cast -> Transpose ... Transpose -> Cast -> output."""
    m = onnx.load(str(tiny_onnx_uint8))
    nodes = list(m.graph.node)
    assert [n.op_type for n in nodes[:2]] == ["Cast", "Transpose"] and nodes[0].input[0] == "input"
    assert [n.op_type for n in nodes[-2:]] == ["Transpose", "Cast"] and nodes[-1].output[0] == "output"
    assert lint(m) == []
    assert read_model_info(tiny_onnx_uint8).trt_buildable is True


def test_pre_fix_int8_graph_has_int32_bias_dequantize(tmp_path, tiny_onnx, calib_photos, monkeypatch):
    """quantize_static's default (QuantizeBias=True) gives DequantizeLinear on INT32 biases: caught."""
    import onnxruntime.quantization as q

    real = q.quantize_static

    def default_bias(*a, extra_options=None, **k):
        extra_options = {key: v for key, v in extra_options.items() if key != "QuantizeBias"}
        return real(*a, extra_options=extra_options, **k)

    crops = P.photo_crops(calib_photos, n=2, size=16)
    fixed = tmp_path / "fixed.onnx"
    P.quantize_int8(tiny_onnx, fixed, crops)
    assert lint(str(fixed)) == []
    monkeypatch.setattr(q, "quantize_static", default_bias)
    old = tmp_path / "old.onnx"
    P.quantize_int8(tiny_onnx, old, crops)
    fs = lint(str(old))
    n_bias = sum(1 for n in onnx.load(str(old)).graph.node
                 if n.op_type == "DequantizeLinear" and n.input[0].endswith("bias_quantized"))
    assert n_bias > 0 and summary(fs) == {"dq-type": n_bias}
    assert all("INT32" in f.message for f in fs)


# --- the export gate and the CLI ------------------------------------------------------------------

def test_export_int8_is_linted_and_recorded(tmp_path, tiny_checkpoint, calib_dir, capsys):
    from hanrt.cli import main

    out = tmp_path / "t8.onnx"
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "-o", str(out), "--precision", "int8",
                 "--calib", str(calib_dir), "--calib-count", "2", "--calib-size", "16"]) == 0
    info = read_model_info(out)
    assert info.trt_buildable is True and "lint clean" in info.trt_lint
    assert "TensorRT: lint clean" in capsys.readouterr().out
    assert main(["lint", str(out)]) == 0


def test_int8_uint8_activations_are_written_but_marked_not_buildable(tmp_path, tiny_checkpoint, calib_dir,
                                                                     capsys, caplog):
    """--int8-activations uint8 is for ONNX Runtime CPU by design: written, warned, recorded."""
    from hanrt.cli import main

    out = tmp_path / "u8act.onnx"
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "-o", str(out), "--precision", "int8",
                 "--int8-activations", "uint8", "--calib", str(calib_dir), "--calib-count", "2",
                 "--calib-size", "16"]) == 0
    assert out.exists()
    info = read_model_info(out)
    assert info.trt_buildable is False
    assert "not TensorRT-buildable by design (--int8-activations uint8" in info.trt_lint
    assert any("not TensorRT-buildable" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert "TensorRT     not TensorRT-buildable by design" in capsys.readouterr().out
    assert main(["lint", str(out), "--json"]) == 1
    rules = {f["rule"] for f in json.loads(capsys.readouterr().out)}
    assert {"q-type", "dq-type", "qdq-zero-point"} <= rules
    # hanrt build refuses it up front, before looking for TensorRT
    assert main(["build", str(out), "--tile", "32x32", "--cache-dir", str(tmp_path / "cache")]) == 6
    assert "is not a graph for TensorRT: not TensorRT-buildable by design" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_lint_cli_exit_codes(tmp_path, capsys):
    from hanrt.cli import main

    bad = tmp_path / "bad.onnx"
    onnx.save(_qdq_conv(TP.INT32), str(bad))
    good = tmp_path / "good.onnx"
    onnx.save(_qdq_conv(TP.FLOAT), str(good))
    assert main(["lint", str(good)]) == 0
    assert "no findings" in capsys.readouterr().out
    assert main(["lint", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "1 finding(s)" in out and "[dq-type] node 'dq_bias' (DequantizeLinear), tensor 'b_q'" in out
    assert main(["lint", str(tmp_path / "missing.onnx")]) == 3
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
    assert main(["lint", str(tmp_path / "junk.onnx")]) == 3


# --- the bundled graphs -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", [f"{stem}{v}.onnx" for stem in ("hanrt_x4", "hanrt_x4_document")
                                  for v in ("", "_uint8", "_fp16", "_int8")])
def test_bundled_graphs_pass_the_lint(name):
    from hanrt.upscaler import default_model_path

    p = default_model_path().parent / name
    assert lint(str(p)) == [], name
    info = read_model_info(p)
    assert info.trt_buildable is True and "lint clean" in info.trt_lint


def test_lint_does_not_change_the_callers_model(tiny_onnx):
    m = onnx.load(str(tiny_onnx))
    for n in m.graph.node:
        n.name = ""
    before = m.SerializeToString()
    assert lint(m) == []
    assert m.SerializeToString() == before


def test_make_int8_hook_output_passes(tmp_path, tiny_han, calib_photos):
    from hanrt_export.to_onnx import ExportOptions, export_onnx

    crops = P.photo_crops(calib_photos, n=2, size=16)
    res = export_onnx(tiny_han, tmp_path / "i8.onnx", options=ExportOptions(), precision_hook=functools.partial(
        P.make_int8, calib=crops, options=P.Int8Options(calib_size=16, calib_count=2)))
    assert res.trt_findings == () and res.info.trt_buildable is True
