"""Fetch the real TensorRT and cuda-bindings Python modules, make them importable without a GPU,
and dump their API into JSON specs (the source the fakes in ``tests/trtfakes`` are generated from).

    python tests/conformance/fetch.py            # download (if not cached), build stubs, dump specs
    python tests/conformance/fetch.py --check    # also fail (exit 1) instead of printing a skip reason

Per wheel: ``pip download --no-deps`` into the cache (``$HANRT_CONFORMANCE_CACHE`` or
``~/.cache/hanrt/conformance``), unpack into its own folder. TensorRT's extension module needs
nine symbols from three libraries; stub libraries exporting them (each returns NULL / 0), built
with ``cc`` under the sonames the extension links against (``readelf -d``), let ``import tensorrt``
succeed: objects cannot be created, but every class, method, property, enum and docstring is the
real one. cuda-bindings imports without a driver and returns ``(cudaErrorInsufficientDriver, ...)``.

Each version is imported in its own subprocess (two TensorRT versions cannot share a process;
neither can cuda-bindings 12 and 13); specs are cached under the wheel's sha256.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: (label, pip requirement): TensorRT 10.3 (JetPack 6), the newest 10.x and the newest 11.x
#: (checked with ``pip index versions tensorrt-cu12-bindings`` / ``tensorrt-cu13-bindings``).
TRT_WHEELS = {
    "10.3.0": "tensorrt-cu12-bindings==10.3.0",
    "10.16.1.11": "tensorrt-cu12-bindings==10.16.1.11",
    "11.4.0.106": "tensorrt-cu13-bindings==11.4.0.106",
}
#: the newest cuda-bindings 12.x and 13.x; both import ``cuda.pathfinder`` at module load.
CUDA_WHEELS = {
    "12.9.10": "cuda-bindings==12.9.10",
    "13.5.0": "cuda-bindings==13.5.0",
}
#: legacy cuda-python: module ``cuda.cudart`` (no ``cuda.bindings``), the kind JetPack 6 (CUDA 12.2)
#: users pip install; without a driver its calls raise RuntimeError instead of returning error tuples
LEGACY_CUDA_WHEELS = {
    "12.2.1": "cuda-python==12.2.1",
}
PATHFINDER = "cuda-pathfinder==1.9.1"  # cuda-bindings 12.9 needs ~=1.1, 13.5 needs >=1.4.2

#: what the TensorRT extension module imports from its three libraries (objdump -T: *UND*)
STUB_C = r"""
#include <stddef.h>
void *createInferBuilder_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return NULL; }
void *getPluginRegistry(void) { return NULL; }
void *getBuilderPluginRegistry(int capability) { return NULL; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
int initLibNvInferPlugins(void *logger, const char *ns) { return 0; }
"""
STUB_LIBS = ("nvinfer", "nvonnxparser", "nvinfer_plugin")
SPEC_FORMAT = 2  # bump when spec_dump.py records more: cached specs of another format are dumped again


class Unavailable(Exception):
    """The real modules cannot be had here: the reason is the skip message (a failure under CI)."""


def skip_or_fail(why: str) -> None:
    """In a test: skip with ``why``; under ``CI=true`` fail instead (CI must run the suite)."""
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the TensorRT conformance suite, but {why}", pytrace=False)
    pytest.skip(f"TensorRT conformance: {why}")


def cache_dir() -> Path:
    return Path(os.environ.get("HANRT_CONFORMANCE_CACHE") or Path.home() / ".cache" / "hanrt" / "conformance")


def why_unavailable() -> str | None:
    """The reason the real modules cannot be used on this machine, or None."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return f"the conformance suite needs Linux x86_64 (the wheels' platform), not {sys.platform} {platform.machine()}"
    if shutil.which(os.environ.get("CC", "cc")) is None:
        return "no C compiler ('cc') to build the TensorRT stub libraries: apt-get install gcc"
    if shutil.which("readelf") is None:
        return "no readelf to find the sonames the TensorRT extension needs: apt-get install binutils"
    return None


@dataclass(frozen=True)
class Unpacked:
    kind: str  # "trt" or "cuda"
    version: str
    root: Path  # sys.path entry
    sha256: str
    stubs: Path | None = None  # folder of stub libraries (trt)
    pathfinder: Path | None = None  # sys.path entry of cuda-pathfinder (cuda)

    @property
    def spec_path(self) -> Path:
        return cache_dir() / "specs" / f"{self.kind}-{self.version}-{self.sha256[:16]}-v{SPEC_FORMAT}.json"

    def env(self) -> dict[str, str]:
        """Environment for a subprocess that imports this module (paths only; no GPU needed)."""
        env = dict(os.environ)
        paths = [str(self.root)] + ([str(self.pathfinder)] if self.pathfinder else [])
        env["HANRT_CONFORMANCE_PATH"] = os.pathsep.join(paths)
        if self.stubs is not None:
            env["LD_LIBRARY_PATH"] = os.pathsep.join([str(self.stubs), env.get("LD_LIBRARY_PATH", "")]).strip(os.pathsep)
        return env


def _download(req: str) -> Path:
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    name, _, ver = req.partition("==")
    stem = name.replace("-", "_") + "-" + ver + "-"
    have = [p for p in wheels.glob("*.whl") if p.name.startswith(stem)]
    if not have:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(wheels), req]
        r = subprocess.run(cmd, capture_output=True, text=True)
        have = [p for p in wheels.glob("*.whl") if p.name.startswith(stem)]
        if r.returncode or not have:
            raise Unavailable(f"cannot download {req} from the package registry (pip download exit {r.returncode}: "
                              f"{(r.stderr or r.stdout).strip().splitlines()[-1:] or ['no output']})")
    return have[0]


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _unpack(whl: Path) -> Path:
    dest = cache_dir() / "unpacked" / whl.name.removesuffix(".whl")
    if not (dest / ".done").is_file():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(whl) as z:
            z.extractall(tmp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        (dest / ".done").write_text("")
    return dest


def _needed_sonames(ext: Path) -> list[str]:
    """The libnv* sonames ``ext`` links against (readelf -d)."""
    out = subprocess.run(["readelf", "-d", str(ext)], capture_output=True, text=True, check=True).stdout
    return [line.split("[")[1].split("]")[0] for line in out.splitlines()
            if "(NEEDED)" in line and "libnv" in line]


def _build_stubs(ext: Path) -> Path:
    sonames = _needed_sonames(ext)
    missing = [lib for lib in STUB_LIBS if not any(s.startswith(f"lib{lib}.so.") for s in sonames)]
    if missing:
        raise RuntimeError(f"{ext} does not link lib{missing[0]}.so.*: the stub list is stale ({sonames})")
    key = hashlib.sha256((STUB_C + "|".join(sorted(sonames))).encode()).hexdigest()[:12]
    dest = cache_dir() / "stubs" / key
    if not (dest / ".done").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        src = dest / "stub.c"
        src.write_text(STUB_C)
        cc = os.environ.get("CC", "cc")
        for so in sonames:
            subprocess.run([cc, "-shared", "-fPIC", "-O0", "-o", str(dest / so), f"-Wl,-soname,{so}", str(src)],
                           check=True, capture_output=True)
        (dest / ".done").write_text("")
    return dest


def trt(version: str) -> Unpacked:
    whl = _download(TRT_WHEELS[version])
    root = _unpack(whl)
    ext = next(root.glob("tensorrt_bindings/tensorrt*.so"))
    return Unpacked("trt", version, root, _sha256(whl), stubs=_build_stubs(ext))


def cuda(version: str) -> Unpacked:
    if version in LEGACY_CUDA_WHEELS:
        whl = _download(LEGACY_CUDA_WHEELS[version])
        return Unpacked("cuda", version, _unpack(whl), _sha256(whl))
    whl = _download(CUDA_WHEELS[version])
    pf = _unpack(_download(PATHFINDER))
    return Unpacked("cuda", version, _unpack(whl), _sha256(whl), pathfinder=pf)


def spec(u: Unpacked) -> dict:
    """The API spec of an unpacked module (dumped in a subprocess that imports it; cached)."""
    p = u.spec_path
    if not p.is_file():
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
        r = subprocess.run([sys.executable, str(HERE / "spec_dump.py"), u.kind, str(tmp)], env=u.env(),
                           capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"dumping the {u.kind} {u.version} spec failed:\n{r.stdout}\n{r.stderr}")
        tmp.replace(p)
    return json.loads(p.read_text())


def ensure_all() -> tuple[dict[str, Unpacked], dict[str, Unpacked]]:
    """Every TensorRT and cuda-bindings version of the matrix, unpacked, with specs; Unavailable if not possible."""
    why = why_unavailable()
    if why:
        raise Unavailable(why)
    trts = {v: trt(v) for v in TRT_WHEELS}
    cudas = {v: cuda(v) for v in (*CUDA_WHEELS, *LEGACY_CUDA_WHEELS)}
    for u in (*trts.values(), *cudas.values()):
        spec(u)
    return trts, cudas


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the modules cannot be had (for CI)")
    a = ap.parse_args(argv)
    try:
        trts, cudas = ensure_all()
    except Unavailable as exc:
        print(f"conformance: unavailable: {exc}", file=sys.stderr)
        return 1 if a.check else 0
    for u in (*trts.values(), *cudas.values()):
        print(f"{u.kind} {u.version}: {u.root} (spec {u.spec_path.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
