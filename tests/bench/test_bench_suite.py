"""Suite files: parsing, the sweep's cross product, shipped suites, and bad suites."""

from __future__ import annotations

import json

import pytest

from hanrt.errors import UsageError
from hanrt_bench.suite import BASELINES, Config, builtin_suites, load_suite, parse_suite


def test_parse_and_cross_product():
    s = parse_suite({"name": "t", "input": [24, 32], "iters": 2, "warmup": 0, "baselines": ["torch-eager"],
                     "sweep": {"backend": ["ort-cpu"], "tile": [16, 0], "batch": [1, 2, 4], "margin": [2]}})
    assert s.input == (24, 32) and s.iters == 2 and s.baselines == ("torch-eager",)
    cfgs = s.configs()
    assert len(cfgs) == 6
    assert cfgs[0] == Config(backend="ort-cpu", precision="fp32", tile=16, margin=2, batch=1)
    assert {c.tile for c in cfgs} == {16, 0} and {c.batch for c in cfgs} == {1, 2, 4}
    assert "tile whole" in cfgs[-1].label


def test_defaults_and_overrides():
    s = parse_suite({})
    assert s.baselines == BASELINES and s.configs() == [Config()]
    s2 = s.with_overrides(tile=[8, 12], iters=3, input=(10, 11), backend=None)
    assert [c.tile for c in s2.configs()] == [8, 12] and s2.iters == 3 and s2.input == (10, 11)
    with pytest.raises(UsageError, match="batch"):
        s.with_overrides(batch=[0])


@pytest.mark.parametrize("name", sorted(builtin_suites()))
def test_shipped_suites_load(name):
    s = load_suite(name)
    assert s.configs() and s.name == name


@pytest.mark.parametrize("data, match", [
    ([1, 2], "top level must be a JSON object"),
    ({"tiles": [1]}, "unknown key"),
    ({"sweep": {"backend": ["cuda-magic"]}}, "unknown backend 'cuda-magic'"),
    ({"sweep": {"precision": ["bf16"]}}, "unknown precision"),
    ({"sweep": {"tile": [-1]}}, "sweep.tile"),
    ({"sweep": {"batch": [0]}}, "sweep.batch"),
    ({"sweep": {"margin": ["8"]}}, "sweep.margin"),
    ({"sweep": {"tile": 64}}, "non-empty list"),
    ({"sweep": {"threads": [1]}}, "unknown sweep axis"),
    ({"iters": 0}, "'iters'"),
    ({"input": [0, 5]}, "input"),
    ({"input": 96}, "'input' must be"),
    ({"baselines": ["caffe"]}, "'baselines'"),
    ({"max_seconds": -1}, "max_seconds"),
])
def test_bad_suites(data, match):
    with pytest.raises(UsageError, match=match):
        parse_suite(data, source="x.json")


def test_bad_files(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{"iters": 2,\n "sweep": }')
    with pytest.raises(UsageError, match=r"not valid JSON: .* line 2"):
        load_suite(p)
    with pytest.raises(UsageError, match="does not exist"):
        load_suite(tmp_path / "missing.json")
    with pytest.raises(UsageError, match="shipped suite"):
        load_suite("no-such-suite")
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"sweep": {"tile": [32]}}))
    assert load_suite(ok).configs()[0].tile == 32
