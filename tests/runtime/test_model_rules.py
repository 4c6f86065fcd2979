"""The model's tile rules in ModelInfo (issue 14: other architectures), read by the tiler: no torch.

``arch``, ``network_range``, ``min_tile``/``tile_multiple``, ``fixed_tile`` and ``max_batch``; older
descriptions (HAN's, before these fields) still read, as HAN with no rules.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hanrt.errors import ModelError, UsageError
from hanrt.model_info import ModelInfo
from hanrt.tiling import legal_tile
from hanrt.upscaler import Upscaler

from _local_backend import LocalBackend


def test_old_descriptions_read_as_han_without_rules():
    old = {"scale": 4, "io": "float", "n_colors": 3, "value_range": [0, 255], "precision": "fp32",
           "hyperparameters": {"scale": 4, "n_resgroups": 2}, "csam": "conv3d", "schema": 1}
    info = ModelInfo.from_json(json.dumps(old))
    assert info.arch == "HAN" and info.network_range is None
    assert (info.min_tile, info.tile_multiple, info.fixed_tile, info.max_batch) == (1, 1, 0, 0)


def test_new_fields_round_trip_and_are_checked():
    info = ModelInfo(scale=2, arch="SwinIR", network_range=(0.0, 1.0), min_tile=16, tile_multiple=8, max_batch=1)
    back = ModelInfo.from_json(info.to_json())
    assert back == info and back.network_range == (0.0, 1.0)
    assert info.metadata_props()["hanrt.arch"] == "SwinIR"
    with pytest.raises(ModelError, match="tile_multiple must be >= 1"):
        ModelInfo.from_json(json.dumps({**json.loads(info.to_json()), "tile_multiple": 0}))


def test_legal_tile():
    assert [legal_tile(n, 16, 8) for n in (1, 16, 17, 100)] == [16, 16, 24, 104]
    assert legal_tile(37) == 37
    with pytest.raises(UsageError):
        legal_tile(0, 16, 8)


class RuledBackend(LocalBackend):
    """LocalBackend with shape rules; refuses any batch that breaks them (as a traced graph would)."""

    def __init__(self, **rules) -> None:
        super().__init__(radius=1, scale=2)
        self.info = self.info.with_(**rules)
        self.seen: list[tuple[int, ...]] = []

    def run(self, batch: np.ndarray) -> np.ndarray:
        n, _, h, w = batch.shape
        i = self.info
        if (min(h, w) < i.min_tile or h % i.tile_multiple or w % i.tile_multiple
                or (i.fixed_tile and (h, w) != (i.fixed_tile, i.fixed_tile)) or (i.max_batch and n > i.max_batch)):
            raise AssertionError(f"batch {batch.shape} breaks the rules {i}")
        self.seen.append(batch.shape)
        return super().run(batch)


def _image(h, w):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_requested_tile_is_rounded_to_the_rules_and_matches_whole_image():
    img = _image(53, 70)
    whole = Upscaler(LocalBackend(radius=1, scale=2), tile=None, margin=0).upscale(img)
    be = RuledBackend(min_tile=16, tile_multiple=8)
    out = Upscaler(be, tile=30, margin=2, batch=4).upscale(img)  # 30 breaks "multiples of 8": 32 is run
    assert {s[2:] for s in be.seen} == {(32, 32)}
    np.testing.assert_array_equal(out, whole)


def test_small_image_padded_to_the_minimum():
    img = _image(5, 9)
    be = RuledBackend(min_tile=16, tile_multiple=8)
    out = Upscaler(be, tile=None, margin=0).upscale(img)
    assert out.shape == (10, 18, 3) and be.seen[0][2:] == (16, 16)


def test_fixed_tile_and_max_batch_from_the_description():
    img = _image(40, 50)
    whole = Upscaler(LocalBackend(radius=1, scale=2), tile=None, margin=0).upscale(img)
    be = RuledBackend(fixed_tile=24, min_tile=24, tile_multiple=24, max_batch=1)
    up = Upscaler(be, tile=128, margin=2, batch=8)
    assert up.batch == 1
    out = up.upscale(img)
    assert {s for s in be.seen} == {(1, 3, 24, 24)}
    np.testing.assert_array_equal(out, whole)
