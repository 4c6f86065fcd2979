"""The engine cache (hanrt.backends.tensorrt.cache) on any machine: fingerprint, sidecar, lock, refusal.

The builder passed to get_or_build here is a stand-in that writes known bytes: TensorRT cannot
run on this machine, and these tests are about what surrounds it (the real build is covered by
the ``trt``-marked test in test_trt_backend.py and the conformance suite).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hanrt.backends import tensorrt as E
from hanrt.io.digest import sha256_file
from hanrt.errors import EngineMismatchError, InputError, ModelError, OutputError, UsageError
from hanrt.model_info import ModelInfo, read_model_info

from _trt_common import H100, INFO, INFO_U8, ORIN, fp, opts  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


# --- fingerprint and paths --------------------------------------------------------------------

def test_fingerprint_key_is_stable_and_sensitive():
    base = fp()
    assert base.key == fp().key and len(base.key) == 16
    assert E.Fingerprint.from_json(json.loads(json.dumps(base.to_json()))) == base
    variants = [
        fp(target=H100), fp(target=dataclasses.replace(ORIN, tensorrt="10.3.1")),
        fp(target=dataclasses.replace(ORIN, compute_capability=(8, 6))), fp(sha="b" * 64),
        fp(info=INFO.with_(precision="int8")), fp(info=INFO.with_(fp32_nodes=("/la/MatMul",))),
        fp(info=INFO.with_(io="uint8")), fp(options=opts((64, 64))), fp(options=opts(batch=2)),
        fp(options=opts(opt_level=5)), fp(options=opts(workspace=2 << 30)),
        fp(slots=2), fp(slots=3),  # engines of an earlier hanrt's --slots N: their own cache keys
    ]
    keys = {v.key for v in variants}
    assert base.key not in keys and len(keys) == len(variants)
    # the timing cache file is not part of the engine's identity
    assert fp(options=opts(timing_cache="/tmp/x.cache")).key == base.key
    # an earlier hanrt's --slots 2 engine: each profile twice; one_of_each() is what hanrt builds now
    two = fp(slots=2)
    assert two.slots == 2 and len(two.profiles) == 2 and two.one_of_each() == base and base.one_of_each() is base
    assert E.Fingerprint.from_json(json.loads(json.dumps(two.to_json()))) == two


def test_slots_1_keeps_the_key_of_engines_from_before_slots():
    """Keys computed by hanrt before --slots existed (engine.py at commit 998a33c, run once on these
    fingerprints), hard-coded: a slots=1 engine must keep its key so old cache entries stay valid."""
    old_keys = {
        "d9543b8ddf579239": opts(),  # hanrt build M --tile 96x96 --batch 4
        "ce632031863ba3bb": opts((96, 96), (64, 128), batch=2, opt_level=5, workspace=512 << 20),
    }
    for key, o in old_keys.items():
        f = fp(options=o)
        assert f.slots == 1 and f.key == key
        assert E.engine_path("/c", "han_fp16.onnx", f).name == f"han_fp16-fp16-{key}.plan"
        d = f.to_json()
        del d["slots"]  # the fingerprint as those versions wrote it in the sidecar
        assert E.Fingerprint.from_json(d) == f and E.Fingerprint.from_json(d).key == key
    assert fp(slots=2).key not in old_keys


def test_cache_paths(tmp_path, monkeypatch):
    f = fp()
    p = E.engine_path(tmp_path, "/models/han x4 (fp16).onnx", f)
    assert p.parent == tmp_path and p.name == f"han_x4_fp16-fp16-{f.key}.plan"
    assert E.sidecar_path(p).name == p.name + ".json"
    monkeypatch.setenv("HANRT_CACHE_DIR", str(tmp_path / "c"))
    assert E.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("HANRT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert E.default_cache_dir() == tmp_path / "xdg" / "hanrt" / "engines"


# --- sidecar ----------------------------------------------------------------------------------

def _sidecar(data=b"PLAN", f=None, onnx_path="han_fp16.onnx"):
    import hashlib

    return E.Sidecar(f or fp(), INFO, len(data), hashlib.sha256(data).hexdigest(), onnx_path,
                     ({"name": "input", "mode": "input", "dtype": "float32", "layout": "NCHW"},))


def test_sidecar_roundtrip_and_read_model_info(tmp_path):
    plan = tmp_path / "e.plan"
    E.write_engine(plan, b"PLAN", _sidecar())
    side = E.read_sidecar(plan)
    assert side == _sidecar() and side.key == fp().key
    assert E.read_sidecar(E.sidecar_path(plan)) == side
    d = json.loads(E.sidecar_path(plan).read_text())
    assert d["format"] == "hanrt-trt-engine" and d["fingerprint"]["gpu"] == "Orin"
    # model_info.read_model_info reads the same sidecar
    assert read_model_info(plan) == INFO
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.plan", "e.plan.json"]


def test_sidecar_roundtrip_with_slots_and_an_old_sidecar_without(tmp_path):
    """Sidecars of an earlier hanrt's --slots 2 (replicated profiles) and from before --slots read."""
    plan = tmp_path / "e.plan"
    f2 = fp(options=opts((96, 96), (64, 64)), slots=2)
    E.write_engine(plan, b"PLAN", _sidecar(f=f2))
    side = E.read_sidecar(plan)
    assert side == _sidecar(f=f2) and side.slots == 2 and len(side.profiles) == 4
    assert side.base_profiles == opts((96, 96), (64, 64)).profiles
    assert json.loads(E.sidecar_path(plan).read_text())["fingerprint"]["slots"] == 2
    # a sidecar written before --slots existed: no "slots" in its fingerprint
    E.write_engine(plan, b"PLAN", _sidecar())
    d = json.loads(E.sidecar_path(plan).read_text())
    del d["fingerprint"]["slots"]
    E.sidecar_path(plan).write_text(json.dumps(d))
    old = E.read_sidecar(plan)
    assert old.slots == 1 and old.fingerprint == fp() and old.key == d["key"]
    assert E.find_engine(plan, ORIN) == old  # still found (and its cache key unchanged)
    # profiles that are not the replication its slots claim: malformed
    d["fingerprint"]["slots"] = 2
    E.sidecar_path(plan).write_text(json.dumps(d))
    with pytest.raises(ModelError, match="malformed"):
        E.read_sidecar(plan)


def test_sidecar_errors(tmp_path):
    plan = tmp_path / "e.plan"
    plan.write_bytes(b"x")
    with pytest.raises(InputError, match="hanrt build"):
        E.read_sidecar(plan)
    E.sidecar_path(plan).write_text("{not json")
    with pytest.raises(InputError, match="cannot be read"):
        E.read_sidecar(plan)
    E.sidecar_path(plan).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ModelError, match="not a hanrt engine sidecar"):
        E.read_sidecar(plan)
    E.sidecar_path(plan).write_text(json.dumps({"format": "hanrt-trt-engine", "schema": 99}))
    with pytest.raises(ModelError, match="upgrade hanrt"):
        E.read_sidecar(plan)
    E.sidecar_path(plan).write_text(json.dumps({"format": "hanrt-trt-engine", "schema": 1, "fingerprint": {}}))
    with pytest.raises(ModelError):
        E.read_sidecar(plan)


def test_write_engine_refuses_a_sidecar_for_other_bytes(tmp_path):
    with pytest.raises(ValueError):
        E.write_engine(tmp_path / "e.plan", b"OTHER", _sidecar(b"PLAN"))
    assert list(tmp_path.iterdir()) == []


# --- refusal ----------------------------------------------------------------------------------

def test_check_compatible_refuses_other_gpu_and_tensorrt(tmp_path):
    side = _sidecar()
    E.check_compatible(side, ORIN)
    with pytest.raises(EngineMismatchError) as ei:
        E.check_compatible(side, H100, plan=tmp_path / "han.plan")
    msg = str(ei.value)
    assert "TensorRT 10.3.0 on 'Orin' (compute capability 8.7)" in msg
    assert "TensorRT 10.7.0 on 'NVIDIA H100 80GB HBM3' (compute capability 9.0)" in msg
    assert "hanrt build han_fp16.onnx --tile 96x96 --batch 4 --output" in msg and msg.endswith("--force")
    with pytest.raises(EngineMismatchError, match="TensorRT 10.3.0 != 10.3.1"):
        E.check_compatible(side, dataclasses.replace(ORIN, tensorrt="10.3.1"))
    with pytest.raises(EngineMismatchError, match="ONNX file changed"):
        E.check_compatible(side, ORIN, onnx_sha256="c" * 64)
    assert issubclass(EngineMismatchError, ModelError)


def test_rebuild_command_forms():
    s = _sidecar(f=fp(options=opts((96, 96), (64, 128), batch=2, opt_level=5, workspace=512 << 20)))
    assert E.rebuild_command(s) == ("hanrt build han_fp16.onnx --tile 96x96 --tile 64x128 --batch 2 "
                                    "--opt-level 5 --workspace 512M --force")
    explicit = E.BuildOptions(profiles=(E.Profile((1, 64, 64), (4, 96, 96), (8, 128, 128)),))
    s2 = _sidecar(f=fp(options=explicit), onnx_path="/m/a b.onnx")
    assert E.rebuild_command(s2, output="/e/x.plan") == (
        "hanrt build '/m/a b.onnx' --min 1x64x64 --opt 4x96x96 --max 8x128x128 --output /e/x.plan --force")


def test_rebuild_command_of_an_engine_built_with_slots_builds_each_profile_once():
    two = _sidecar(f=fp(options=opts((96, 96), (64, 128)), slots=2))  # an earlier hanrt's --slots 2
    assert E.rebuild_command(two) == "hanrt build han_fp16.onnx --tile 96x96 --tile 64x128 --batch 4 --force"
    three = _sidecar(f=fp(slots=3))
    assert E.rebuild_command(three) == "hanrt build han_fp16.onnx --tile 96x96 --batch 4 --force"
    # the command parses back into the options that build each profile once
    from hanrt.cli import build_parser
    from hanrt.cli.build import build_options

    for side in (two, three, _sidecar()):
        argv = E.rebuild_command(side).split()[1:]
        o, _ = build_options(build_parser().parse_args(argv))
        assert o.profiles == side.base_profiles


# --- get_or_build: cache hit, miss, force, bad input ------------------------------------------

class CountingBuilder:
    """Stand-in for the TensorRT build: returns bytes derived from the ONNX file and counts calls."""

    def __init__(self, delay_s: float = 0.0):
        self.calls = 0
        self.delay_s = delay_s

    def __call__(self, onnx_path, info, options):
        self.calls += 1
        time.sleep(self.delay_s)
        return E.BuiltPlan(b"PLAN:" + onnx_path.read_bytes()[:16], ({"name": "input", "mode": "input"},))


def test_get_or_build_hit_miss_force(tmp_path, tiny_onnx):
    b = CountingBuilder()
    cache = tmp_path / "cache"
    r1 = E.get_or_build(tiny_onnx, opts(), target=ORIN, builder=b, cache_dir=cache)
    assert r1.built and b.calls == 1 and r1.plan.parent == cache
    assert r1.sidecar.fingerprint.onnx_sha256 == sha256_file(tiny_onnx)
    r2 = E.get_or_build(tiny_onnx, opts(), target=ORIN, builder=b, cache_dir=cache)
    assert not r2.built and b.calls == 1 and r2.plan == r1.plan
    r3 = E.get_or_build(tiny_onnx, opts(), target=ORIN, builder=b, cache_dir=cache, force=True)
    assert r3.built and b.calls == 2
    # another GPU: another key, another file; both stay
    r4 = E.get_or_build(tiny_onnx, opts(), target=H100, builder=b, cache_dir=cache)
    assert r4.built and r4.plan != r1.plan and r1.plan.exists()
    assert read_model_info(r1.plan).scale == 4


def test_an_engine_built_with_slots_by_an_earlier_hanrt_is_reused(tmp_path, tiny_onnx):
    """An engine whose profiles an earlier hanrt replicated per slot (hanrt build --slots N) runs the
    same as one with each profile once: hanrt build --output reuses it instead of refusing it."""
    b = CountingBuilder()
    out = tmp_path / "han.plan"
    old = E.get_or_build(tiny_onnx, opts(), target=ORIN, builder=b, output=out)
    f2 = dataclasses.replace(old.sidecar.fingerprint, profiles=old.sidecar.fingerprint.profiles * 2, slots=2)
    E.write_engine(out, b"OLDPLAN", dataclasses.replace(old.sidecar, fingerprint=f2, plan_bytes=7,
                                                        plan_sha256=__import__("hashlib").sha256(b"OLDPLAN").hexdigest()))
    again = E.get_or_build(tiny_onnx, opts(), target=ORIN, builder=b, output=out)
    assert not again.built and b.calls == 1 and again.sidecar.slots == 2 and out.read_bytes() == b"OLDPLAN"
    # other settings are still refused, naming the rebuild and the command that keeps it
    with pytest.raises(EngineMismatchError) as ei:
        E.get_or_build(tiny_onnx, opts(batch=2), target=ORIN, builder=b, output=out)
    msg = str(ei.value)
    assert "profiles:" in msg and "slots" not in msg.split(";")[0]
    assert _suggested(msg, "keep the existing engine with the settings it was built with:").endswith(
        f"--tile 96x96 --batch 4 --output {out}")


def _follow(command: str, *, target=ORIN, builder=None) -> E.EngineResult:
    """Run a suggested ``hanrt build`` command the way the CLI would (with a stand-in builder)."""
    from hanrt.cli import build_parser
    from hanrt.cli.build import build_options

    args = build_parser().parse_args(shlex.split(command)[1:])
    o, cache = build_options(args)
    return E.get_or_build(args.model, o, target=target, builder=builder or CountingBuilder(), cache_dir=cache,
                          output=args.output, force=args.force)


def _suggested(msg: str, after: str) -> str:
    """The command in ``msg`` right after ``after`` (up to the next " (" or ";" or the end)."""
    rest = msg.split(after, 1)[1].strip()
    for stop in (" (or ", "; or "):
        rest = rest.split(stop, 1)[0]
    return rest


def test_other_settings_mismatch_suggests_the_settings_asked_for(tmp_path, tiny_onnx):
    b = CountingBuilder()
    out = tmp_path / "han.plan"
    onnx = str(tiny_onnx)
    E.get_or_build(onnx, opts(opt_level=5), target=ORIN, builder=b, output=out)
    with pytest.raises(EngineMismatchError) as ei:
        E.get_or_build(onnx, opts(batch=2), target=ORIN, builder=b, output=out)
    msg = str(ei.value)
    assert "opt_level: 5 -> 3" in msg and "profiles:" in msg
    rebuild = _suggested(msg, "rebuild it as asked with:")
    assert rebuild.endswith(f"--tile 96x96 --batch 2 --output {out} --force") and "--opt-level" not in rebuild
    keep = _suggested(msg, "keep the existing engine with the settings it was built with:")
    assert keep.endswith(f"--tile 96x96 --batch 4 --opt-level 5 --output {out}")
    assert not _follow(keep, builder=b).built
    assert _follow(rebuild, builder=b).built
    assert not E.get_or_build(onnx, opts(batch=2), target=ORIN, builder=b, output=out).built


def test_engine_for_another_gpu_suggests_the_settings_asked_for(tmp_path, tiny_onnx):
    """The not-portable refusal from get_or_build rebuilds with the settings asked for too."""
    b = CountingBuilder()
    out = tmp_path / "han.plan"
    onnx = str(tiny_onnx)
    E.get_or_build(onnx, opts(opt_level=5), target=ORIN, builder=b, output=out)
    with pytest.raises(EngineMismatchError) as ei:
        E.get_or_build(onnx, opts(), target=H100, builder=b, output=out)
    msg = str(ei.value)
    assert "Engines are not portable" in msg and "--opt-level" not in msg
    rebuild = _suggested(msg, "rebuild it here with:")
    assert rebuild == shlex.join(["hanrt", "build", onnx, "--tile", "96x96", "--batch", "4", "--output", str(out),
                                    "--force"])
    assert _follow(rebuild, target=H100, builder=b).built
    assert not E.get_or_build(onnx, opts(), target=H100, builder=b, output=out).built
    # outside get_or_build (e.g. loading the engine) the refusal still rebuilds the engine's own settings
    E.get_or_build(onnx, opts(opt_level=4), target=ORIN, builder=b, output=out, force=True)
    with pytest.raises(EngineMismatchError, match=r"--opt-level 4 --output \S+ --force$"):
        E.check_compatible(E.read_sidecar(out), H100, plan=out)


def test_get_or_build_output_refuses_mismatch(tmp_path, tiny_onnx):
    b = CountingBuilder()
    out = tmp_path / "han.plan"
    E.get_or_build(tiny_onnx, opts(), target=ORIN, builder=b, output=out)
    with pytest.raises(EngineMismatchError, match="--force"):
        E.get_or_build(tiny_onnx, opts(), target=H100, builder=b, output=out)
    with pytest.raises(EngineMismatchError, match="other settings"):
        E.get_or_build(tiny_onnx, opts(batch=2), target=ORIN, builder=b, output=out)
    assert b.calls == 1
    r = E.get_or_build(tiny_onnx, opts(), target=H100, builder=b, output=out, force=True)
    assert r.built and E.read_sidecar(out).fingerprint.gpu == H100.gpu


def test_interrupted_write_is_not_a_hit(tmp_path, tiny_onnx):
    b = CountingBuilder()
    r = E.get_or_build(tiny_onnx, opts(), target=ORIN, builder=b, cache_dir=tmp_path)
    r.plan.write_bytes(b"PLA")  # truncated plan beside a complete sidecar
    assert E.find_engine(r.plan, ORIN) is None
    r2 = E.get_or_build(tiny_onnx, opts(), target=ORIN, builder=b, cache_dir=tmp_path)
    assert r2.built and b.calls == 2
    E.sidecar_path(r.plan).unlink()  # sidecar missing: not finished
    assert E.find_engine(r.plan, ORIN) is None


def test_get_or_build_bad_inputs(tmp_path, tiny_onnx):
    b = CountingBuilder()
    with pytest.raises(InputError):
        E.get_or_build(tmp_path / "none.onnx", opts(), target=ORIN, builder=b, cache_dir=tmp_path)
    other = tmp_path / "plain.onnx"
    other.write_bytes(b"\x08\x07")  # an ONNX header without hanrt metadata
    with pytest.raises(ModelError, match="hanrt export"):
        E.get_or_build(other, opts(), target=ORIN, builder=b, cache_dir=tmp_path)
    with pytest.raises(UsageError, match=".plan"):
        E.get_or_build(tiny_onnx, opts(), target=ORIN, builder=b, output=tmp_path / "x.onnx")
    assert b.calls == 0


def test_builder_failure_leaves_nothing(tmp_path, tiny_onnx):
    def failing(onnx_path, info, options):
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        E.get_or_build(tiny_onnx, opts(), target=ORIN, builder=failing, cache_dir=tmp_path)
    assert [p.suffix for p in tmp_path.iterdir()] == [".lock"]


# --- locking ----------------------------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import sys, time
    sys.path[:0] = {paths!r}
    from hanrt.backends import tensorrt as E
    target = E.Target("10.3.0", "Orin", (8, 7))
    def builder(onnx_path, info, options):
        with open({log!r}, "a") as f:
            f.write("build\\n")
        time.sleep(1.0)
        return E.BuiltPlan(b"P" * 100000)
    r = E.get_or_build({onnx!r}, E.BuildOptions(profiles=tuple(E.profiles_from_tiles([(96, 96)], 4))),
                       target=target, builder=builder, cache_dir={cache!r})
    print("built" if r.built else "reused", r.plan)
""")


def test_two_processes_build_one_key_once(tmp_path, tiny_onnx):
    log = tmp_path / "builds.log"
    cache = tmp_path / "cache"
    code = _CHILD.format(paths=[str(ROOT / "runtime")], log=str(log), onnx=str(tiny_onnx), cache=str(cache))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    words = sorted(o[0].split()[0] for o in outs)
    assert words == ["built", "reused"]
    assert log.read_text() == "build\n"
    plans = list(cache.glob("*.plan"))
    assert len(plans) == 1 and plans[0].read_bytes() == b"P" * 100000
    assert E.read_sidecar(plans[0]).plan_bytes == 100000
    assert not [p for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_file_lock_times_out_while_held(tmp_path):
    lock = tmp_path / "k.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import sys,time; sys.path[:0]=[{str(ROOT / 'runtime')!r}]\n"
         f"from hanrt.backends.tensorrt.cache import file_lock\nwith file_lock({str(lock)!r}):\n"
         f"    print('held', flush=True); time.sleep(3)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(OutputError, match="another hanrt build"):
            with E.file_lock(lock, timeout_s=0.3):
                pass
        assert time.monotonic() - t0 < 2.5
    finally:
        holder.wait(timeout=10)
        holder.stdout.close()
    with E.file_lock(lock, timeout_s=1):  # free again after the holder exits
        pass
    assert os.path.exists(lock)


