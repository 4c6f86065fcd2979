"""hanrt_bench.train_speed: the training-step timing tool (eager modes; compiling is too slow for a test)."""

import pytest

torch = pytest.importorskip("torch")

from hanrt_bench import train_speed  # noqa: E402


def test_measure_times_every_mode_on_the_same_network():
    rows = train_speed.measure(resgroups=1, resblocks=1, feats=8, reduction=4, batch=2, patch=8, rounds=2,
                               warmup=1, compile_too=False)
    assert [r["mode"] for r in rows] == ["fp32", "channels_last", "bf16", "channels_last+bf16"]
    assert all(not r["compiled"] and 0 < r["min_s"] <= r["median_s"] for r in rows)
    loss = {r["mode"]: r["loss"] for r in rows}
    # same weights and batch: the memory format changes no arithmetic, BF16 only a little
    assert loss["channels_last"] == pytest.approx(loss["fp32"], rel=1e-4)
    assert loss["bf16"] == pytest.approx(loss["fp32"], rel=0.05)


def test_cli_prints_a_row_per_variant(capsys):
    assert train_speed.main(["--resgroups", "1", "--resblocks", "1", "--feats", "8", "--reduction", "4",
                             "--batch", "1", "--patch", "8", "--rounds", "1", "--warmup", "1",
                             "--modes", "fp32", "bf16", "--no-compile", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "HAN 1x1x8" in out and "1.00x" in out
    assert len([ln for ln in out.splitlines() if ln.startswith(("fp32 ", "bf16 "))]) == 2


def test_cli_refuses_an_unknown_mode():
    with pytest.raises(SystemExit) as e:
        train_speed.main(["--modes", "fp8"])
    assert e.value.code == 2
