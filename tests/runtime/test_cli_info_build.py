"""``hanrt info`` and ``hanrt build`` (the parts that run without TensorRT)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hanrt.backends import tensorrt as E
from hanrt.cli import main
from hanrt.model_info import ModelInfo

ROOT = Path(__file__).resolve().parents[2]


def _has_trt() -> bool:
    try:
        import tensorrt  # noqa: F401
        return True
    except ImportError:
        return False


def _engine(tmp_path, slots: int = 1):
    """An engine's files; ``slots > 1``: as an earlier hanrt's ``hanrt build --slots N`` wrote them."""
    info = ModelInfo(scale=4, precision="fp16", fp32_nodes=("/la/MatMul", "/la/Softmax"),
                     hyperparameters={"n_resgroups": 10, "n_feats": 64}, precision_notes="energy kept FP32")
    options = E.BuildOptions(profiles=tuple(E.profiles_from_tiles([(96, 96)], 4)))
    fp = E.Fingerprint.make(target=E.Target("10.3.0", "Orin", (8, 7)), onnx_sha256="ab" * 32, info=info,
                            options=options)
    if slots > 1:
        fp = dataclasses.replace(fp, profiles=fp.profiles * slots, slots=slots)
    data = b"ENGINE"
    side = E.Sidecar(fp, info, len(data), hashlib.sha256(data).hexdigest(), "han_fp16.onnx",
                     ({"name": "input", "mode": "input", "dtype": "float32", "layout": "NCHW",
                       "shape": [-1, 3, 96, 96]},))
    return E.write_engine(tmp_path / "han.plan", data, side)


@pytest.fixture()
def engine_file(tmp_path):
    return _engine(tmp_path)


def test_info_engine_of_an_earlier_hanrt_with_slots_lists_each_profile_once(tmp_path, capsys):
    assert main(["info", str(_engine(tmp_path, slots=3))]) == 0
    out = capsys.readouterr().out
    assert out.count("  profile ") == 1 and "built 3x (an earlier hanrt's --slots 3; one is used)" in out
    assert main(["info", str(_engine(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert out.count("  profile ") == 1 and "built" not in out.split("  profile ")[1].splitlines()[0]


def test_info_onnx(tiny_onnx, capsys):
    assert main(["info", str(tiny_onnx)]) == 0
    out = capsys.readouterr().out
    assert "ONNX graph" in out and "scale        x4" in out and "precision    fp32" in out
    assert "n_resgroups=2" in out and "float32 NCHW" in out


def test_info_engine_text_and_json(engine_file, capsys):
    assert main(["info", str(engine_file)]) == 0
    out = capsys.readouterr().out
    assert "TensorRT engine" in out and "TensorRT 10.3.0 on 'Orin' (compute capability 8.7)" in out
    assert "kept FP32    2 node(s)" in out and "/la/MatMul" in out and "min 1x96x96 opt 4x96x96" in out
    assert main(["info", str(engine_file), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] == "tensorrt-engine" and d["engine"]["fingerprint"]["gpu"] == "Orin"
    assert d["model_info"]["fp32_nodes"] == ["/la/MatMul", "/la/Softmax"]


def test_info_errors(tmp_path, capsys):
    assert main(["info", str(tmp_path / "none.onnx")]) == 3
    (tmp_path / "x.plan").write_bytes(b"x")
    assert main(["info", str(tmp_path / "x.plan")]) == 3
    assert "sidecar" in capsys.readouterr().err


def test_info_works_without_onnx_and_onnxruntime(tiny_onnx):
    code = ("import sys; sys.modules.update({m: None for m in ('onnx', 'onnxruntime', 'torch', 'tensorrt')})\n"
            f"sys.path[:0] = [{str(ROOT / 'runtime')!r}]\n"
            f"from hanrt.cli import main; sys.exit(main(['info', {str(tiny_onnx)!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "scale        x4" in r.stdout


def test_build_help_without_tensorrt():
    code = ("import sys; sys.modules.update({m: None for m in ('tensorrt', 'cuda', 'onnx', 'onnxruntime')})\n"
            f"sys.path[:0] = [{str(ROOT / 'runtime')!r}]\n"
            "from hanrt.cli import main; sys.exit(main(['build', '--help']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--tile" in r.stdout and "--workspace" in r.stdout
    out = " ".join(r.stdout.split())  # argparse wraps the option help
    assert "--slots" not in out and "Each profile is built once" in out


def _args(*argv):
    from hanrt.cli import build_parser

    return build_parser().parse_args(["build", *argv])


def test_build_options_from_arguments(tmp_path):
    from hanrt.cli.build import build_options

    o, cache = build_options(_args("m.onnx", "--tile", "96x96", "--tile", "64", "--batch", "4",
                                   "--workspace", "512M", "--opt-level", "5", "--cache-dir", str(tmp_path)))
    # each profile once: execution contexts share profiles (TensorRT >= 10), so no copies per slot
    assert [p.describe() for p in o.profiles] == ["min 1x96x96, opt 4x96x96, max 4x96x96",
                                                   "min 1x64x64, opt 4x64x64, max 4x64x64"]
    assert o.workspace == 512 << 20 and o.opt_level == 5 and cache == tmp_path
    assert o.timing_cache == str(tmp_path / "timing.cache")
    o2, _ = build_options(_args("m.onnx", "--min", "1x64x64", "--opt", "2x96x96", "--max", "4x128x128"))
    assert o2.profiles == (E.Profile((1, 64, 64), (2, 96, 96), (4, 128, 128)),)


@pytest.mark.parametrize("argv", [
    [],                                                    # no shapes
    ["--tile", "96x"],                                     # bad tile
    ["--tile", "96", "--batch", "0"],                      # bad batch
    ["--min", "1x64x64", "--opt", "2x96x96"],              # incomplete explicit form
    ["--tile", "96", "--min", "1x64x64", "--opt", "1x64x64", "--max", "1x64x64"],  # both forms
    ["--min", "4x64x64", "--opt", "2x96x96", "--max", "4x128x128"],  # min > opt
    ["--tile", "96", "--workspace", "lots"],
    ["--tile", "96", "--opt-level", "9"],
    ["--min", "1x64x64", "--opt", "1x64x64", "--max", "1x64x64"] * 2,  # one profile twice
])
def test_build_bad_arguments_exit_2(tiny_onnx, argv, capsys):
    assert main(["build", str(tiny_onnx), *argv]) == 2
    assert "hanrt: error:" in capsys.readouterr().err


def test_build_has_no_slots_option(tiny_onnx, capsys):
    """Execution contexts share profiles (TensorRT >= 10): nothing to replicate per slot."""
    with pytest.raises(SystemExit) as ei:
        main(["build", str(tiny_onnx), "--tile", "96", "--slots", "2"])
    assert ei.value.code == 2 and "unrecognized arguments: --slots 2" in capsys.readouterr().err


@pytest.mark.skipif(_has_trt(), reason="TensorRT is installed: the missing-dependency path cannot be shown")
def test_build_without_tensorrt_names_the_extra(tiny_onnx, tmp_path, capsys):
    assert main(["build", str(tiny_onnx), "--tile", "32x32", "--cache-dir", str(tmp_path)]) == 5
    err = capsys.readouterr().err
    assert "pip install 'hanrt[trt]'" in err and "hanrt[trt-cu13]" in err and "JetPack" in err
    assert list(tmp_path.iterdir()) == []


def test_build_refuses_non_hanrt_graph(tmp_path):
    p = tmp_path / "other.onnx"
    p.write_bytes(b"\x08\x07")
    assert main(["build", str(p), "--tile", "32"]) == 6
