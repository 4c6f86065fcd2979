"""Optimization profiles (hanrt.backends.tensorrt.profiles): parsing, choice, validation."""

from __future__ import annotations

import pytest

from hanrt.backends import tensorrt as E
from hanrt.errors import UsageError

from _trt_common import INFO, INFO_U8, opts


# --- parsing and profiles ---------------------------------------------------------------------

def test_parse_shapes_and_sizes():
    assert E.parse_hw("96x128") == (96, 128) and E.parse_hw("64") == (64, 64) and E.parse_hw(" 8X4 ") == (8, 4)
    assert E.parse_nhw("4x96x96") == (4, 96, 96)
    assert E.parse_size("512M") == 512 << 20 and E.parse_size("2G") == 2 << 30
    assert E.parse_size("1.5GiB") == int(1.5 * (1 << 30)) and E.parse_size("1048576") == 1 << 20
    for bad in ("96x", "0x4", "axb", "-1"):
        with pytest.raises(UsageError):
            E.parse_hw(bad)
    with pytest.raises(UsageError):
        E.parse_nhw("96x96")
    for bad in ("lots", "12K", "-3G"):
        with pytest.raises(UsageError):
            E.parse_size(bad)


def test_profiles_from_tiles():
    ps = E.profiles_from_tiles([(96, 96), (64, 128), (96, 96)], 4)
    assert ps == [E.Profile((1, 96, 96), (4, 96, 96), (4, 96, 96)), E.Profile((1, 64, 128), (4, 64, 128), (4, 64, 128))]
    assert ps[0].accepts((3, 96, 96)) and not ps[0].accepts((5, 96, 96)) and not ps[0].accepts((1, 96, 95))
    with pytest.raises(UsageError):
        E.profiles_from_tiles([(96, 96)], 0)
    with pytest.raises(UsageError):
        E.profiles_from_tiles([], 2)


def test_base_profiles_reads_engines_of_an_earlier_hanrt_with_slots():
    """hanrt build --slots N of earlier versions built each profile N times in a row."""
    a, b = E.profiles_from_tiles([(96, 96), (64, 128)], 4)
    assert E.base_profiles([a, a, a, b, b, b], 3) == (a, b) and E.base_profiles([a, b], 1) == (a, b)
    for bad in (0, -1, 17, 1.5, True, "2"):
        with pytest.raises(UsageError, match="slots must be an integer"):
            E.base_profiles([a], bad)
    for not_replicated in ([a, b], [a, a, b], [a, b, a, b]):
        with pytest.raises(UsageError, match="must appear 2 times in a row"):
            E.base_profiles(not_replicated, 2)


def test_pick_profile():
    ps = E.profiles_from_tiles([(96, 96), (64, 64)], 4)
    assert E.pick_profile(ps, 4, 64, 64) == 1 and E.pick_profile(ps, 1, 96, 96) == 0
    assert E.pick_profile(ps + ps, 2, 64, 64) == 1  # an earlier hanrt's copies: the first one
    with pytest.raises(UsageError, match=r"not 5x96x96.*--tile 96x96 --batch 5"):
        E.pick_profile(ps, 5, 96, 96)


def test_profile_arithmetic_and_layouts():
    p = E.Profile((1, 64, 64), (4, 96, 96), (8, 128, 160))
    assert p.input_shapes(INFO) == {"min": (1, 3, 64, 64), "opt": (4, 3, 96, 96), "max": (8, 3, 128, 160)}
    assert p.input_shapes(INFO_U8)["max"] == (8, 128, 160, 3)
    assert p.output_shape((2, 96, 80), INFO) == (2, 3, 384, 320)
    assert p.output_shape((2, 96, 80), INFO_U8) == (2, 384, 320, 3)
    assert p.describe() == "min 1x64x64, opt 4x96x96, max 8x128x160"
    assert E.Profile.from_json(p.to_json()) == p
    with pytest.raises(UsageError, match="min <= opt <= max"):
        E.Profile((1, 64, 64), (4, 32, 96), (8, 128, 160))
    with pytest.raises(UsageError):
        E.Profile((0, 64, 64), (4, 96, 96), (8, 128, 160))


def test_build_options_validation():
    with pytest.raises(UsageError):
        E.BuildOptions(profiles=())
    with pytest.raises(UsageError):
        opts(opt_level=6)
    with pytest.raises(UsageError):
        opts(workspace=1000)
    a, b = opts((96, 96), (64, 64)).profiles
    with pytest.raises(UsageError, match=r"profile min 1x96x96, opt 4x96x96, max 4x96x96 is given twice"):
        E.BuildOptions(profiles=(a, b, a))  # contexts share profiles: one of each is enough
    with pytest.raises(TypeError):
        E.BuildOptions(profiles=(a,), slots=2)  # no slots: every profile is built once


def test_check_profiles_against_model_rules():
    E.check_profiles(opts().profiles, INFO)
    with pytest.raises(UsageError, match="multiple of 8"):
        E.check_profiles(opts((90, 96)).profiles, INFO.with_(tile_multiple=8))
    with pytest.raises(UsageError, match="minimum 16"):
        E.check_profiles(opts((8, 8)).profiles, INFO.with_(min_tile=16))


