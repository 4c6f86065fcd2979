"""Commands and backends are registered plugins (entry points ``hanrt.commands`` / ``hanrt.backends``).

- the runtime never names the host-side packages (import or string);
- a backend defined in one module and registered by one entry point (a distribution made here, on
  ``PYTHONPATH``) runs through ``hanrt upscale --backend NAME`` and is what ``auto`` picks for its files;
- discovery works from a source checkout (the pyproject tables) and from installed metadata alone;
- an in-process ``main(["-q", ...])`` leaves global logging as it found it.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The plugin's one module: a nearest-neighbour "model" described by a .nn file (JSON: the scale).
PLUGIN = '''
"""A backend in one module: the spec at the top, heavy work (here none) inside open()."""
import json

import numpy as np

from hanrt.backends.base import Backend, BackendSpec, FileKind, Probe, check_batch
from hanrt.model_info import ModelInfo

NEAREST_FILE = FileKind("nearest", "a nearest-neighbour recipe", (".nn",))


class NearestBackend(Backend):
    name = "nearest"

    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            self.info = ModelInfo(scale=int(json.load(f)["scale"]))

    def run(self, batch):
        check_batch(self.info, batch, source=self.name)
        s = self.info.scale
        return np.repeat(np.repeat(batch, s, axis=2), s, axis=3)


SPEC = BackendSpec(name="nearest", extra="dev", kinds=(NEAREST_FILE,), open=lambda model, o: NearestBackend(model),
                   probe=lambda: Probe(True, "numpy repeats pixels"), summary="pixel repetition (a test plugin)")
'''


def _env(*front: Path) -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(p) for p in front] + [str(ROOT / d) for d in ("runtime", "export", "benchmarks")]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _dist(where: Path, name: str, entry_points: dict[str, dict[str, str]]) -> None:
    """An installed distribution's metadata, as pip writes it (``NAME-VERSION.dist-info``)."""
    d = where / f"{name}-0.1.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n", encoding="utf-8")
    (d / "entry_points.txt").write_text(
        "".join(f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in t.items()) + "\n" for g, t in entry_points.items()),
        encoding="utf-8")


def test_runtime_never_names_the_host_side_packages():
    """Arrows run export -> runtime and bench -> runtime only: no module under runtime/hanrt names
    hanrt_export or hanrt_bench, in an import or in any string (entry points carry those names)."""
    offenders = []
    for p in sorted((ROOT / "runtime" / "hanrt").rglob("*.py")):
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if "hanrt_export" in line or "hanrt_bench" in line:
                offenders.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_a_backend_in_one_module_and_one_registration(tmp_path):
    from PIL import Image

    site = tmp_path / "site"
    site.mkdir()
    (site / "nearest_plugin.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    _dist(site, "nearest_plugin", {"hanrt.backends": {"nearest": "nearest_plugin:SPEC"}})
    model = tmp_path / "x4.nn"
    model.write_text(json.dumps({"scale": 4}), encoding="utf-8")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "in.png")
    want = np.repeat(np.repeat(img, 4, 0), 4, 1)

    def hanrt(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "hanrt", *args], capture_output=True, text=True,
                              env=_env(site), timeout=120)

    r = hanrt("upscale", "--help")
    assert r.returncode == 0 and "nearest" in r.stdout, r.stderr
    r = hanrt("info", "--backends", "--json")
    rows = {b["name"]: b for b in json.loads(r.stdout)}
    assert rows["nearest"]["available"] and rows["nearest"]["suffixes"] == [".nn"] and "ort-cpu" in rows
    for backend, n in (("nearest", 1), ("auto", 2)):
        out = tmp_path / f"out{n}.png"
        r = hanrt("-v", "upscale", str(tmp_path / "in.png"), "--output", str(out), "--model", str(model),
                  "--backend", backend, "--tile", "8", "--margin", "2")
        assert r.returncode == 0, r.stderr
        assert np.array_equal(np.asarray(Image.open(out)), want)
    assert "backend: nearest (x4.nn is a nearest-neighbour recipe; numpy repeats pixels)" in r.stderr
    # a file no registered backend runs: the message lists the kinds that are known, the plugin's too
    r = hanrt("upscale", str(tmp_path / "in.png"), "--output", str(tmp_path / "o.png"), "--model",
              str(tmp_path / "in.png"), "--backend", "ort-cpu")
    assert r.returncode == 2 and ".nn (nearest-neighbour recipe)" in r.stderr, r.stderr


_HELP = r"""
import sys, hanrt.plugins as P
if sys.argv[1] == "metadata-only":
    P._checkout_pyproject = lambda: None  # as from a wheel: no pyproject.toml beside the package
from hanrt.cli import commands
from hanrt.backends import backend_names
print((sorted(c.name for c in commands()), list(backend_names())))
print(sorted({e.source for e in P.entries(P.COMMANDS)}))
"""


def _tables() -> dict[str, dict[str, str]]:
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as f:
        eps = tomllib.load(f)["project"]["entry-points"]
    return {g: dict(eps[g]) for g in ("hanrt.commands", "hanrt.backends")}


@pytest.mark.parametrize("mode", ["checkout", "metadata-only"])
def test_discovery_from_a_checkout_and_from_installed_metadata(tmp_path, mode):
    """A checkout on PYTHONPATH reads its pyproject tables (whatever metadata is installed); an
    installed hanrt without a checkout reads its metadata: the same commands and backends."""
    tables = _tables()
    site = tmp_path / "site"
    if mode == "metadata-only":  # hanrt's metadata as `pip install` writes it, first on the path
        _dist(site, "hanrt", tables)
    r = subprocess.run([sys.executable, "-c", _HELP, mode], capture_output=True, text=True,
                       env=_env(site), timeout=120, cwd=tmp_path)  # not the checkout: it may hold an egg-info
    assert r.returncode == 0, r.stderr
    names, sources = r.stdout.strip().splitlines()
    assert names == str((sorted(tables["hanrt.commands"]), ["auto", *tables["hanrt.backends"]]))
    assert sources == str(["pyproject.toml"] if mode == "checkout" else ["hanrt"])


def test_help_lists_every_command_with_heavy_packages_blocked():
    from hanrt_testkit import IMPORT_BLOCKER

    code = IMPORT_BLOCKER + "\nimport runpy\nsys.argv = ['hanrt', '--help']\nrunpy.run_module('hanrt', run_name='__main__')\n"
    blocked = ["torch", "onnx", "onnxslim", "onnxruntime", "tensorrt", "cuda", "av", "cv2", "tritonclient",
               "pytriton", "matplotlib", "skimage"]
    r = subprocess.run([sys.executable, "-c", code, json.dumps(blocked)], capture_output=True, text=True,
                       env=_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    for name in _tables()["hanrt.commands"]:
        assert f"    {name} " in r.stdout, name


def test_main_leaves_global_logging_as_it_found_it(tmp_path, caplog):
    """``main(["-q", ...])`` sets levels while the command runs and puts them back: a later test's
    caplog still sees hanrt's INFO records (it did not: "-q" left the hanrt logger at ERROR)."""
    from hanrt.cli import main

    loggers = ["hanrt", "hanrt_export", "hanrt_bench", ""]
    before = {n: logging.getLogger(n).level for n in loggers}
    handlers = list(logging.getLogger().handlers)
    assert main(["-q", "upscale", str(tmp_path / "none.png"), "--output", str(tmp_path / "o.png")]) == 3
    assert main(["-q", "export", "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert main(["-vv", "lint", str(tmp_path / "none.onnx")]) != 0
    assert {n: logging.getLogger(n).level for n in loggers} == before
    assert logging.getLogger().handlers == handlers
    caplog.set_level(logging.INFO)
    logging.getLogger("hanrt.upscaler").info("still heard")
    assert [r.getMessage() for r in caplog.records] == ["still heard"]


_CACHED = r"""
import json, sys
import hanrt.plugins as P
from hanrt.backends import backend_names
print(json.dumps([list(backend_names()), "importlib.metadata" in sys.modules]))
"""


def test_discovery_is_cached_until_the_installed_distributions_change(tmp_path):
    """The second start reads the cache (no importlib.metadata); a distribution installed (a new
    dist-info) or an entry point edited afterwards is seen at once; HANRT_PLUGIN_CACHE=0 turns it off."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "nearest_plugin.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    env = dict(_env(site), XDG_CACHE_HOME=str(tmp_path / "cache"))

    def run(**extra: str) -> tuple[list[str], bool]:
        r = subprocess.run([sys.executable, "-c", _CACHED], capture_output=True, text=True,
                           env=dict(env, **extra), timeout=120)
        assert r.returncode == 0, r.stderr
        return tuple(json.loads(r.stdout))

    names, scanned = run()
    assert scanned and "nearest" not in names and len(list((tmp_path / "cache" / "hanrt" / "plugins").iterdir())) == 1
    assert run() == (names, False)
    _dist(site, "nearest_plugin", {"hanrt.backends": {"nearest": "nearest_plugin:SPEC"}})
    names2, scanned = run()
    assert scanned and names2 == [*names, "nearest"]
    assert run() == (names2, False)
    ep = site / "nearest_plugin-0.1.dist-info" / "entry_points.txt"
    ep.write_text(ep.read_text(encoding="utf-8").replace("nearest =", "nearest2 ="), encoding="utf-8")
    os.utime(ep, ns=(ep.stat().st_atime_ns, ep.stat().st_mtime_ns + 10**9))  # a later edit, whatever the clock's grain
    assert run() == ([*names, "nearest2"], True)
    assert run(HANRT_PLUGIN_CACHE="0") == ([*names, "nearest2"], True)
