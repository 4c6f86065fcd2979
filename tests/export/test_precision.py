"""FP16 mixed and INT8 Q/DQ graphs (hanrt_export.precision).

The FP16 checks use onnx.reference.ReferenceEvaluator, which computes FP16 nodes in real FP16
(ONNX Runtime's CPU provider silently upcasts FP16 graphs to FP32 and would hide an overflow).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from hanrt.errors import InputError, UsageError  # noqa: E402
from hanrt.model_info import read_model_info  # noqa: E402
from hanrt_export import precision as P  # noqa: E402

LA_OPS = {"MatMul", "ReduceMax", "Expand", "Sub", "Softmax"}
MIN_FP16_DB = 60.0  # mixed FP16 vs FP32 on 0..255 outputs (FP16 output rounding alone: ~75-80 dB)


@pytest.fixture(scope="module")
def m32(tiny_onnx):
    return onnx.load(str(tiny_onnx))


@pytest.fixture(scope="module")
def crops(calib_photos):
    return P.photo_crops(calib_photos, n=4, size=16, seed=1)


@pytest.fixture(scope="module")
def decision(m32, crops):
    return P.decide_fp32_nodes(m32, [P.to_graph_input(c, "float") for c in crops])


@pytest.fixture(scope="module")
def m16(m32, decision):
    return P.convert_fp16(m32, decision.fp32_nodes)


def _ops(model, names):
    by = {n.name: n.op_type for n in model.graph.node}
    return {by[n] for n in names}


def test_layer_attention_energy_nodes_are_found(m32):
    la = P.layer_attention_nodes(m32)
    assert LA_OPS <= _ops(m32, la)
    # exactly one MatMul (the energy), not the attention @ values product
    assert [n for n in la if _ops(m32, [n]) == {"MatMul"}] == ["/la/MatMul"]
    assert all("dot product" in why for why in la.values())


def test_decision_keeps_energy_and_pools_only(m32, decision):
    ops = _ops(m32, decision.fp32_nodes)
    assert ops == LA_OPS | {"Transpose", "GlobalAveragePool"}
    pools = [n for n in m32.graph.node if n.op_type == "GlobalAveragePool"]
    assert {n.name for n in pools} <= set(decision.fp32_nodes)
    # every FP16 tensor stayed far below the FP16 maximum on the calibration crops
    assert decision.fp16_peak is not None and decision.fp16_peak[1] < 8192
    notes = decision.notes()
    assert "layer-attention energy: 6 node(s)" in notes and "global pool: 2 node(s)" in notes


def test_range_rule_adds_nodes_beyond_the_limit(m32, crops):
    d = P.decide_fp32_nodes(m32, [P.to_graph_input(crops[0], "float")],
                            options=P.Fp16Options(range_limit=50.0))
    extra = [n for n, why in d.reasons.items() if why.startswith("calibrated range")]
    assert extra, "a 50.0 limit must catch 0..255 activations"
    outs = {n.name: n.output[0] for n in m32.graph.node}
    assert all(d.max_abs[outs[n]] > 50 for n in extra)
    assert set(P.layer_attention_nodes(m32)) <= set(d.fp32_nodes)


def test_converted_graph_is_fp16_with_fp32_io(m32, m16, decision):
    onnx.checker.check_model(m16)
    assert m16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert m16.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    types = {vi.name: vi.type.tensor_type.elem_type for vi in m16.graph.value_info}
    by = {n.name: n for n in m16.graph.node}
    # every conv runs in FP16 (weights FP16), the energy MatMul in FP32
    inits = {i.name: i.data_type for i in m16.graph.initializer}
    convs = [n for n in m16.graph.node if n.op_type == "Conv"]
    assert convs and all(inits[c.input[1]] == onnx.TensorProto.FLOAT16 for c in convs)
    assert types[by["/la/MatMul"].output[0]] == onnx.TensorProto.FLOAT
    assert types[by["/la/Softmax"].output[0]] == onnx.TensorProto.FLOAT
    assert types[by["/la/MatMul_1"].output[0]] == onnx.TensorProto.FLOAT16


@pytest.mark.parametrize("kind", ["zeros", "full255", "checkerboard"])
def test_mixed_fp16_is_accurate_on_extreme_inputs(m32, m16, kind):
    x = P.to_graph_input(P.extreme_inputs(16)[kind], "float")
    ref = P._ort_run(m32, x)
    got = P.reference_run(m16, x)
    assert np.all(np.isfinite(got))
    assert P.psnr(got, ref) >= MIN_FP16_DB


def test_mixed_fp16_is_accurate_on_real_photo_crops(m32, m16, photo):
    # E1 photo (astronaut) crops: evaluation only, never calibration
    for y, x in ((100, 200), (300, 60)):
        xin = P.to_graph_input(photo[y:y + 16, x:x + 16], "float")
        got = P.reference_run(m16, xin)
        assert P.psnr(got, P._ort_run(m32, xin)) >= MIN_FP16_DB


def test_all_fp16_graph_overflows(m32):
    """The check can fail: with the energy in FP16 the output is NaN (inf - inf in the Sub)."""
    all16 = P.convert_fp16(m32, [])
    x = P.to_graph_input(P.extreme_inputs(16)["full255"], "float")
    got = P.reference_run(all16, x)
    assert not np.all(np.isfinite(got))
    assert P.psnr(got, P._ort_run(m32, x)) == float("-inf")
    # ... while ONNX Runtime's CPU provider hides it (it computes FP16 graphs in FP32)
    assert np.all(np.isfinite(P._ort_run(all16, x)))


def test_make_fp16_gate_refuses_an_overflowing_recipe(tmp_path, tiny_han):
    from hanrt.errors import ParityError
    from hanrt_export.to_onnx import ExportOptions, export_onnx

    out = tmp_path / "bad.onnx"
    no_fp32 = functools.partial(P.make_fp16, fp32_nodes=())  # a recipe that keeps nothing in FP32
    with pytest.raises(ParityError, match="FP16 gate failed"):
        export_onnx(tiny_han, out, options=ExportOptions(verify=False), precision_hook=no_fp32)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_export_fp16_records_the_decision(tmp_path, tiny_han, calib_photos):
    from hanrt_export.to_onnx import ExportOptions, export_onnx

    out = tmp_path / "fp16.onnx"
    crops = P.photo_crops(calib_photos, n=3, size=16)
    res = export_onnx(tiny_han, out, options=ExportOptions(), precision_hook=functools.partial(
        P.make_fp16, calib=crops, calibration="3 test crops", options=P.Fp16Options(calib_size=16)))
    info = read_model_info(out)
    assert info.precision == "fp16" == res.info.precision
    assert "/la/MatMul" in info.fp32_nodes and "/la/Softmax" in info.fp32_nodes
    assert "3 test crops" in info.precision_notes
    m = onnx.load(str(out))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer)


@pytest.mark.parametrize("retries", [0, 2])
def test_fp16_gate_failure_retries_with_more_nodes_fp32(tmp_path, tiny_onnx, crops, monkeypatch, retries):
    """The first decision fails the gate (forced): with retries the range limit drops 4x and the graph
    is written with the note; without, nothing is written."""
    import shutil

    from hanrt.errors import ParityError

    real_gate, limits = P._fp16_gate, []
    real_decide = P.decide_fp32_nodes

    def decide(m, inputs, *, options, calibration=""):
        limits.append(options.range_limit)
        return real_decide(m, inputs, options=options, calibration=calibration)

    def gate(m32, m16, info, size, min_psnr):
        if len(limits) == 1:  # the first decision: as if it were 40 dB on the checkerboard
            return 40.0, "on the 'checkerboard' input 40.00 dB (forced)", "forced"
        return real_gate(m32, m16, info, size, min_psnr)

    monkeypatch.setattr(P, "_fp16_gate", gate)
    monkeypatch.setattr(P, "decide_fp32_nodes", decide)
    out = tmp_path / "g.onnx"
    shutil.copyfile(tiny_onnx, out)
    before = out.read_bytes()
    info = read_model_info(out)
    opts = P.Fp16Options(calib_size=16, retries=retries)
    if not retries:
        with pytest.raises(ParityError, match=r"every range limit tried \(8192: on the 'checkerboard' input"):
            P.make_fp16(out, info, calib=crops, options=opts)
        assert out.read_bytes() == before and limits == [8192.0]
        return
    got = P.make_fp16(out, info, calib=crops, options=opts)
    assert limits == [8192.0, 2048.0]
    assert "the gate failed at range limit 8192: on the 'checkerboard' input 40.00 dB (forced); passed at 2048" \
        in got.precision_notes
    assert read_model_info(out).precision == "fp16"


def test_export_fp16_uint8_io(tmp_path, tiny_han, photo):
    from hanrt_export.to_onnx import ExportOptions, export_onnx

    f32, f16 = tmp_path / "u8.onnx", tmp_path / "u8_fp16.onnx"
    export_onnx(tiny_han, f32, options=ExportOptions(io="uint8"))
    export_onnx(tiny_han, f16, options=ExportOptions(io="uint8"), precision_hook=P.make_fp16)
    m = onnx.load(str(f16))
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    x = P.to_graph_input(photo[200:216, 180:196], "uint8")
    got = P.reference_run(m, x)
    ref = P._ort_run(f32, x)
    assert got.dtype == np.uint8 and got.shape == ref.shape == (1, 64, 64, 3)
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def test_int8_qdq_graph(tmp_path, tiny_han, calib_photos, photo):
    from hanrt_export.to_onnx import ExportOptions, export_onnx

    f32, f8 = tmp_path / "f32.onnx", tmp_path / "int8.onnx"
    export_onnx(tiny_han, f32, options=ExportOptions())
    crops = P.photo_crops(calib_photos, n=4, size=24)
    export_onnx(tiny_han, f8, options=ExportOptions(), precision_hook=functools.partial(
        P.make_int8, calib=crops, options=P.Int8Options(calib_size=24, calib_count=4)))
    info = read_model_info(f8)
    assert info.precision == "int8" and "/la/MatMul" in info.fp32_nodes
    m = onnx.load(str(f8))
    q = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert q, "explicit Q/DQ nodes expected"
    # TensorRT builds only symmetric INT8 Q/DQ: INT8 zero points, all 0
    inits = {i.name: i for i in m.graph.initializer}
    for n in q:
        zp = inits[n.input[2]]
        assert zp.data_type == onnx.TensorProto.INT8 and not onnx.numpy_helper.to_array(zp).any(), n.name
    prod = {o: n for n in m.graph.node for o in n.output}
    for n in m.graph.node:
        if n.name.startswith("/la/"):
            assert all(prod.get(i) is None or prod[i].op_type != "DequantizeLinear" for i in n.input), n.name
    # held-out photo (E1, never calibrated on): INT8 stays close to FP32
    x = P.to_graph_input(photo[100:132, 200:232], "float")
    assert P.psnr(P._ort_run(f8, x), P._ort_run(f32, x)) >= 30.0


def test_load_photos_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        P.load_photos(tmp_path / "nope")
    with pytest.raises(InputError, match="holds no images"):
        P.load_photos(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="cannot be read"):
        P.load_photos(tmp_path)


def test_load_photos_reads_through_hanrt_reader(tmp_path):
    """Calibration photos get the runtime's guards: EXIF orientation, 16 bits rounded, alpha
    dropped, and the size limit."""
    from PIL import Image

    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 8
    im.save(tmp_path / "a_rotated.jpg", exif=exif, quality=100)
    Image.fromarray(np.full((4, 5), 65535, np.uint16)).save(tmp_path / "b_grey16.png")
    Image.fromarray(rng.integers(0, 256, (4, 5, 4), dtype=np.uint8), "RGBA").save(tmp_path / "c_alpha.png")
    photos = P.load_photos(tmp_path)
    assert [p.shape for p in photos] == [(10, 6, 3), (4, 5, 3), (4, 5, 3)]
    assert all(p.dtype == np.uint8 for p in photos)
    assert int(photos[1].min()) == 255
    with pytest.raises(InputError, match="cannot be read.*above the limit"):
        P.load_photos(tmp_path, max_pixels=20)


def test_photo_crops_shapes(calib_photos):
    cs = P.photo_crops(calib_photos, n=5, size=20)
    assert len(cs) == 5 and all(c.shape == (20, 20, 3) and c.dtype == np.uint8 for c in cs)
    with pytest.raises(InputError):
        P.photo_crops([np.zeros((4, 4, 3), np.uint8)], n=1, size=20)
    with pytest.raises(UsageError):
        P.photo_crops([], n=1, size=8)


def test_cli_export_precisions(tmp_path, tiny_checkpoint, calib_dir):
    from hanrt.cli import main

    out16 = tmp_path / "t16.onnx"
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "-o", str(out16), "--precision", "fp16",
                 "--calib", str(calib_dir), "--calib-count", "3", "--calib-size", "16"]) == 0
    assert read_model_info(out16).precision == "fp16"
    # int8 without photos: usage error, nothing written
    out8 = tmp_path / "t8.onnx"
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "-o", str(out8), "--precision", "int8"]) == 2
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "-o", str(out8), "--precision", "int8",
                 "--calib", str(tmp_path / "missing")]) == 3
    assert not out8.exists()
    assert main(["export", "--checkpoint", str(tiny_checkpoint), "-o", str(out8), "--calib", str(calib_dir)]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t16.onnx"]


def test_int8_uint8_activations_for_onnxruntime_cpu(tmp_path, tiny_onnx, calib_photos):
    crops = P.photo_crops(calib_photos, n=2, size=16)
    out = tmp_path / "u8act.onnx"
    excluded = P.quantize_int8(tiny_onnx, out, crops, options=P.Int8Options(activations="uint8"))
    assert "/la/MatMul" in excluded
    m = onnx.load(str(out))
    inits = {i.name: i for i in m.graph.initializer}
    acts = [n for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    assert acts and all(inits[n.input[2]].data_type == onnx.TensorProto.UINT8 for n in acts)
    with pytest.raises(UsageError, match="int8 or uint8"):
        P.quantize_int8(tiny_onnx, tmp_path / "x.onnx", crops, options=P.Int8Options(activations="fp8"))
    with pytest.raises(UsageError, match="--calib"):
        P.quantize_int8(tiny_onnx, tmp_path / "y.onnx", [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u8act.onnx"]


def test_energy_is_found_by_its_growth_alone(m32, crops):
    """With the range limit above every measured value, the layer attention is still found: its
    ranges grow with the tile area (x4 when the input is mirror-tiled to twice its sides)."""
    inputs = [P.to_graph_input(c, "float") for c in crops]
    top = max(P.activation_ranges(m32, [P.doubled_input(x) for x in inputs]).values())
    d = P.decide_fp32_nodes(m32, inputs, options=P.Fp16Options(range_limit=top * 1.01, reference_tile=4096))
    assert not [n for n, why in d.reasons.items() if why.startswith("calibrated range")]
    assert _ops(m32, d.fp32_nodes) == LA_OPS | {"Transpose", "GlobalAveragePool"}
    energy = [why for n, why in d.reasons.items() if _ops(m32, [n]) == {"MatMul"}]
    assert energy and all("grows x" in why for why in energy)
    # ... and not with a reference tile no larger than what was measured: growth alone is not enough
    d2 = P.decide_fp32_nodes(m32, inputs, options=P.Fp16Options(range_limit=top * 1.01, reference_tile=32))
    assert _ops(m32, d2.fp32_nodes) == {"GlobalAveragePool"}


def test_calibration_reads_a_fetch_data_layout(tmp_path):
    """Calibration folders are read like training folders: images in subfolders (photos/, lineart/,
    screens/ of `hanrt train --fetch-data`) count, sorted by path."""
    from PIL import Image

    from hanrt_export.precision import load_photos

    for sub, colour in (("photos", 10), ("lineart", 200)):
        (tmp_path / sub).mkdir()
        Image.new("RGB", (20, 10), (colour, colour, colour)).save(tmp_path / sub / "a.png")
    imgs = load_photos(tmp_path)
    assert [int(i[0, 0, 0]) for i in imgs] == [200, 10]  # lineart/a.png, photos/a.png
