"""Every validation error of BiGainConfig names the field, the value and what is allowed."""

import math

import pytest

from bigain_export.config import BiGainConfig
from bigain_export.errors import ConfigError

BAD = [
    (dict(ratio=0.8), r"ratio=0.8 .*\[0, 0.75\]"),
    (dict(ratio=-0.1), r"ratio=-0.1"),
    (dict(ratio="0.5"), r"ratio='0.5'"),
    (dict(ratio=True), r"ratio=True"),
    (dict(merge="fast"), r"merge='fast' .*none \| bigain \| tome"),
    (dict(kv="pool"), r"kv='pool' .*none \| bigain \| todo"),
    (dict(anchor="random"), r"anchor='random' .*window \| released \(for merge='bigain'\)"),
    (dict(merge="tome", anchor="window"), r"anchor='window' .*random \| fixed"),
    (dict(downsample=0), r"downsample=0 .*integer >= 1"),
    (dict(downsample=2.0), r"downsample=2.0"),
    (dict(kv="bigain", alpha=math.nan), r"alpha=nan .*finite"),
    (dict(alpha_start=math.inf), r"alpha_start=inf"),
    (dict(kv="todo", alpha=0.9), r"alpha=0.9 .*kv='todo'"),
    (dict(unet_levels=()), r"unet_levels=\(\)"),
    (dict(unet_levels=(-1,)), r"unet_levels=\(-1,\)"),
    (dict(dit_blocks=(1, "2")), r"dit_blocks=\(1, '2'\)"),
    (dict(version=99), r"version=99"),
    (dict(min_tokens=-1), r"min_tokens=-1 .*integer >= 0"),
    (dict(min_tokens=4096.0), r"min_tokens=4096.0"),
    (dict(min_tokens=True), r"min_tokens=True"),
    (dict(match_radius=-1), r"match_radius=-1 .*integer in \[0, 7\]"),
    (dict(match_radius=8), r"match_radius=8 .*integer in \[0, 7\]"),
    (dict(match_radius=1.0), r"match_radius=1.0"),
    (dict(match_radius=True), r"match_radius=True"),
    (dict(merge="none", match_radius=1), r"match_radius=1 .*merge='none'"),
]


@pytest.mark.parametrize("kwargs,message", BAD, ids=[str(k) for k, _ in BAD])
def test_bad_values_raise_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        BiGainConfig(**kwargs)


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        BiGainConfig(ratio=2)


def test_unknown_preset_and_task_and_field():
    with pytest.raises(ConfigError, match=r"preset='fast' .*bigain-merge"):
        BiGainConfig.preset("fast")
    with pytest.raises(ConfigError, match=r"task='x' .*generation \| classification"):
        BiGainConfig().for_task("x")
    with pytest.raises(ConfigError, match=r"BiGainConfig.speed=1"):
        BiGainConfig.from_dict({"speed": 1})


def test_defaults_and_derived_values():
    config = BiGainConfig()
    assert (config.merge, config.ratio, config.anchor, config.kv) == ("bigain", 0.5, "window", "none")
    assert BiGainConfig(merge="tome").anchor == "random"
    assert BiGainConfig.preset("todo").fixed_alpha == 1.0
    assert BiGainConfig.preset("bigain-kv").fixed_alpha is None
    assert BiGainConfig.preset("bigain-kv").for_task("classification").fixed_alpha == 0.9
    assert BiGainConfig.preset("bigain-kv", alpha=0.9).for_task("generation").fixed_alpha is None
    for name in ("none", "tome", "bigain-merge", "todo"):  # alpha does nothing there: one config serves both
        config = BiGainConfig.preset(name)
        assert config.for_task("classification") == config.for_task("generation") == config
    # r = int(N * ratio), capped at the number of sources (N - anchors)
    assert BiGainConfig(ratio=0.5).merged_count(4096, 64, 64) == 2048
    assert BiGainConfig(ratio=0.75).merged_count(35, 5, 7) == 26
    assert BiGainConfig(ratio=0.0).merged_count(64, 8, 8) == 0


def test_round_trip_through_dict():
    config = BiGainConfig.preset("bigain-both", ratio=0.7, dit_blocks=(3, 1), unet_levels=(1, 0))
    assert config.dit_blocks == (1, 3) and config.unet_levels == (0, 1)
    assert BiGainConfig.from_dict(config.to_dict()) == config


def test_unet_levels_default_is_auto_and_round_trips():
    config = BiGainConfig()
    assert config.unet_levels is None and config.to_dict()["unet_levels"] is None
    assert BiGainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"unet_levels=\(\).*None \(auto\)"):
        BiGainConfig(unet_levels=())


def test_min_tokens_leaves_the_dict_of_configs_without_it_as_it_was():
    """Configs without min_tokens keep the exact dict they had before the field existed: it is
    what every published sweep checkpoint and engine manifest fingerprints."""
    import json
    from pathlib import Path

    checkpoint = Path(__file__).parents[1] / "docs/results/sweep/unet-speed/points/bigain-merge-0.7-187b8e36.json"
    recorded = json.loads(checkpoint.read_text())["parts"]["drift"]["facts"]["method"]["config"]["classify"]
    config = BiGainConfig.preset("bigain-merge", ratio=0.7)
    assert config.to_dict() == recorded and "min_tokens" not in recorded
    assert BiGainConfig.from_dict(recorded) == config
    gated = BiGainConfig.preset("bigain-merge", ratio=0.7, min_tokens=8192)
    assert gated.to_dict()["min_tokens"] == 8192 and BiGainConfig.from_dict(gated.to_dict()) == gated
    assert gated.describe() == "bigain-merge r=0.7 (window) + layers >= 8192 tokens"
    local = BiGainConfig.preset("bigain-merge", ratio=0.7, match_radius=1)
    assert local.to_dict()["match_radius"] == 1 and BiGainConfig.from_dict(local.to_dict()) == local
    assert "match_radius" not in recorded and local.describe() == "bigain-merge r=0.7 (window, match radius 1)"


def test_min_tokens_gates_merging_and_pooling_per_layer():
    config = BiGainConfig.preset("bigain-both", ratio=0.5, min_tokens=1024)
    assert config.merged_count(1023, 31, 33) == 0 and not config.pools_kv_at(1023)
    assert config.merged_count(1024, 32, 32) == 512 and config.pools_kv_at(1024)
