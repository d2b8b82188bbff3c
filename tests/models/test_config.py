"""ArchConfig and TrainConfig: JSON round trips and refusal of bad values."""

from __future__ import annotations

import json
from typing import Any

import pytest

from models import BASELINES, ArchConfig, Basic, Bottleneck, ConfigError, StageConfig, count_params
from trainers.config import TrainConfig


def resnet443_dict() -> dict[str, Any]:
    return BASELINES["resnet-443"].to_dict()


def test_resnet_443_counts_the_published_figure() -> None:
    assert count_params(BASELINES["resnet-443"]) == 4_697_162


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_survives_a_json_round_trip(name: str) -> None:
    arch = BASELINES[name]
    again = ArchConfig.from_dict(json.loads(json.dumps(arch.to_dict())))
    assert again == arch
    assert ArchConfig.from_json(arch.to_json()) == arch


def test_config_is_frozen_and_hashable() -> None:
    arch = BASELINES["resnet-20"]
    with pytest.raises(AttributeError):
        arch.stem_width = 32  # type: ignore[misc]
    assert hash(arch) == hash(ArchConfig.from_dict(arch.to_dict()))


def test_stages_given_as_list_become_a_tuple() -> None:
    arch = ArchConfig(stages=[StageConfig(1, 16)])  # type: ignore[arg-type]
    assert isinstance(arch.stages, tuple)


def with_change(path: str, value: Any) -> dict[str, Any]:
    data = resnet443_dict()
    if path.startswith("stages"):
        index, key = path[len("stages["):].split("].")
        data["stages"][int(index)][key] = value
    elif path.startswith("block."):
        data["block"][path[len("block."):]] = value
    else:
        data[path] = value
    return data


BAD_ARCH = [
    ("stem_width", "64", "must be int"),
    ("stem_width", 0, "must be in 1..4096"),
    ("stem_width", True, "must be int"),
    ("stem_kernel", 4, "must be one of"),
    ("block.type", "dense", "must be one of ('basic', 'bottleneck', 'preact', "),
    ("block.type", 4, "must be str"),
    ("block.expansion", 4, "unknown field"),
    ("shortcut_kernel", 2, "must be one of"),
    ("shortcut_pool", "yes", "must be bool"),
    ("pool", "median", "must be one of"),
    ("pool_kernel", 9, "must be in 1..8"),
    ("pool_kernel", 2.5, "must be int or null"),
    ("se_ratio", -0.5, "must be in 0..4"),
    ("dropout", 1.0, "must be in [0, 1)"),
    ("branch_drop", "dropout", "must be one of ('none', 'path', 'shakedrop')"),
    ("branch_drop_rate", 0.3, "must be 0 when branch_drop is 'none'"),
    ("branch_drop_rate", "0.3", "must be float"),
    ("stages[0].blocks", 0, "must be >= 1"),
    ("stages[1].width", -8, "must be in 1..4096"),
    ("stages[2].kernel", 6, "must be one of"),
    ("stages[1].stride", 3, "must be 1 or 2"),
    ("stages[0].depth", 3, "unknown field"),
    ("colour", "red", "unknown field"),
]


@pytest.mark.parametrize(("field", "value", "problem"), BAD_ARCH)
def test_from_dict_names_the_bad_field_and_value(field: str, value: Any, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        ArchConfig.from_dict(with_change(field, value))
    message = str(info.value)
    assert message.startswith(f"{field}:"), message
    assert problem in message
    assert repr(value) in message
    assert info.value.field == field


@pytest.mark.parametrize(("block", "field", "problem"), [
    ({"type": "bottleneck", "groups": 0}, "block.groups", "must be in 1..4096"),
    ({"type": "preact_bottleneck", "groups": 3}, "stages[0].width",
     "divisible by groups=3"),
    ({"type": "pyramid_bottleneck", "expansion": 0}, "block.expansion", "must be >= 1"),
    ({"type": "pyramid_bottleneck", "expansion": 3}, "stages[0].width",
     "multiple of expansion=3"),
    ({"type": "shake", "shake_backward": 1}, "block.shake_backward", "must be bool"),
    ({"type": "pyramid", "groups": 2}, "block.groups", "unknown field"),
])
def test_new_block_settings_are_checked_at_the_door(block: dict[str, Any], field: str,
                                                    problem: str) -> None:
    data = {"stages": [{"blocks": 1, "width": 64}], "block": block}
    with pytest.raises(ConfigError) as info:
        ArchConfig.from_dict(data)
    assert info.value.field == field and problem in str(info.value), str(info.value)


def test_branch_drop_rate_must_be_below_one_with_a_method() -> None:
    data = {"stages": [{"blocks": 1, "width": 64}], "branch_drop": "path",
            "branch_drop_rate": 1.0}
    with pytest.raises(ConfigError, match=r"branch_drop_rate: must be in \[0, 1\)"):
        ArchConfig.from_dict(data)
    data["branch_drop_rate"] = 0.5
    assert ArchConfig.from_dict(data).describe().endswith("path0.5")


def test_from_dict_refuses_missing_and_malformed_stages() -> None:
    data = resnet443_dict()
    del data["stages"]
    with pytest.raises(ConfigError, match=r"^stages: is required"):
        ArchConfig.from_dict(data)
    with pytest.raises(ConfigError, match=r"^stages: must be a list"):
        ArchConfig.from_dict({**resnet443_dict(), "stages": "4,4,3"})
    with pytest.raises(ConfigError, match=r"^stages: must hold at least one stage"):
        ArchConfig.from_dict({**resnet443_dict(), "stages": []})
    with pytest.raises(ConfigError, match=r"^stages\[0\]: must be a mapping"):
        ArchConfig.from_dict({**resnet443_dict(), "stages": [4]})
    with pytest.raises(ConfigError, match=r"^ArchConfig: must be a mapping"):
        ArchConfig.from_dict([1, 2])


def test_bottleneck_widths_must_divide_by_the_expansion() -> None:
    data = {**resnet443_dict(), "block": {"type": "bottleneck", "expansion": 3}}
    with pytest.raises(ConfigError, match=r"^stages\[0\].width: must be a multiple of expansion=3"):
        ArchConfig.from_dict(data)
    with pytest.raises(ConfigError, match=r"^block.expansion: must be >= 1, got 0"):
        ArchConfig.from_dict({**data, "block": {"type": "bottleneck", "expansion": 0}})
    with pytest.raises(ConfigError, match=r"^block.type: is required"):
        ArchConfig.from_dict({**data, "block": {"expansion": 4}})


# `ArchConfig.to_dict()` of resnet-20 and resnet-164 as the first release wrote them
# (trial attributes, checkpoints and config.json files of that release hold these).
FIRST_RELEASE_BASIC = json.loads(
    '{"stages": [{"blocks": 3, "width": 16, "kernel": 3, "stride": 1}, {"blocks": 3, "width": '
    '32, "kernel": 3, "stride": 2}, {"blocks": 3, "width": 64, "kernel": 3, "stride": 2}], '
    '"stem_width": 16, "stem_kernel": 3, "block_type": "basic", "expansion": 4, '
    '"shortcut_kernel": 1, "shortcut_pool": false, "pool": "avg", "pool_kernel": null, '
    '"se_ratio": 0.0, "dropout": 0.0}')
FIRST_RELEASE_BOTTLENECK = json.loads(
    '{"stages": [{"blocks": 18, "width": 64, "kernel": 3, "stride": 1}, {"blocks": 18, '
    '"width": 128, "kernel": 3, "stride": 2}, {"blocks": 18, "width": 256, "kernel": 3, '
    '"stride": 2}], "stem_width": 16, "stem_kernel": 3, "block_type": "bottleneck", '
    '"expansion": 4, "shortcut_kernel": 1, "shortcut_pool": false, "pool": "avg", '
    '"pool_kernel": null, "se_ratio": 0.0, "dropout": 0.0}')


def test_first_release_dicts_load_as_equal_configs() -> None:
    basic = ArchConfig.from_dict(FIRST_RELEASE_BASIC)
    assert basic == BASELINES["resnet-20"]
    assert basic.block == Basic()  # the basic block's meaningless expansion is dropped
    bottleneck = ArchConfig.from_dict(FIRST_RELEASE_BOTTLENECK)
    assert bottleneck == BASELINES["resnet-164"]
    assert bottleneck.block == Bottleneck(expansion=4)
    assert ArchConfig.from_dict({**FIRST_RELEASE_BOTTLENECK, "expansion": 2}).block == \
        Bottleneck(expansion=2)
    # today's form: the block with its own settings, nested
    assert bottleneck.to_dict()["block"] == {"type": "bottleneck", "expansion": 4, "groups": 1}
    assert "block_type" not in basic.to_dict() and "expansion" not in basic.to_dict()


@pytest.mark.parametrize(("change", "field", "problem"), [
    ({"block_type": "dense"}, "block_type", "must be one of"),
    ({"block_type": 3}, "block_type", "must be str"),
    ({"block_type": "bottleneck", "expansion": 0}, "expansion", "must be >= 1"),
    ({"expansion": "4"}, "expansion", "must be int"),
    ({"block": {"type": "basic"}}, "block_type", "cannot be given with 'block'"),
])
def test_first_release_dicts_with_bad_block_keys_name_them(change: dict[str, Any], field: str,
                                                           problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        ArchConfig.from_dict({**FIRST_RELEASE_BASIC, **change})
    assert info.value.field == field
    assert problem in str(info.value)


def mixed() -> ArchConfig:
    return ArchConfig(
        stages=(StageConfig(2, 64), StageConfig(2, 128, stride=2, block=Basic()),
                StageConfig(2, 256, stride=2, block=Bottleneck(expansion=2))),
        stem_width=32)


def test_per_stage_blocks_round_trip_and_override_the_network_block() -> None:
    arch = mixed()
    assert arch.stages[1].block is None  # the network's own block: stored as None
    assert arch.stage_blocks() == (Basic(), Basic(), Bottleneck(expansion=2))
    assert ArchConfig.from_json(arch.to_json()) == arch
    assert arch.to_dict()["stages"][2]["block"] == {"type": "bottleneck", "expansion": 2,
                                                    "groups": 1}
    assert "block" not in arch.to_dict()["stages"][0]
    assert arch.describe() == ("basic s32k3 | 2x64k3 2x128k3/2 2x256k3/2@bottleneck(expansion=2)"
                               " | sc1 | avg")
    with pytest.raises(ConfigError, match=r"^stages\[1\].block.type: must be one of"):
        ArchConfig.from_dict({**arch.to_dict(), "stages": [
            {"blocks": 1, "width": 8}, {"blocks": 1, "width": 8, "block": {"type": "x"}}]})
    with pytest.raises(ConfigError, match=r"^stages\[0\].width: must be a multiple of expansion"):
        ArchConfig(stages=(StageConfig(1, 30, block=Bottleneck()),))


def test_describe_keeps_one_line_for_one_block_type() -> None:
    assert BASELINES["resnet-443"].describe() == (
        "basic s64k3 | 4x64k3 4x128k3/2 3x256k3/2 | sc1 | avg")
    assert BASELINES["resnet-164"].describe().startswith("bottleneck s16k3 | 18x64k3 ")
    every_stage_bottleneck = ArchConfig(stages=(StageConfig(1, 64, block=Bottleneck()),))
    assert every_stage_bottleneck.describe() == "bottleneck s64k3 | 1x64k3 | sc1 | avg"


def test_train_config_round_trips_and_names_bad_fields() -> None:
    train = TrainConfig(epochs=30, lr=0.05, optimizer="adamw", cutout=8, ema=0.999)
    assert TrainConfig.from_dict(json.loads(train.to_json())) == train
    cases = [
        ({"epochs": 0}, "epochs: must be >= 1"),
        ({"optimizer": "lion"}, "optimizer: must be one of"),
        ({"lr": "0.1"}, "lr: must be float"),
        ({"lr": 0.0}, "lr: must be in (0, 10]"),
        ({"warmup_epochs": 40.0}, "warmup_epochs: must be in 0..epochs (30)"),
        ({"cutout": 40}, "cutout: must be in 0..32"),
        ({"batch_size": 1.5}, "batch_size: must be int"),
        ({"nesterov": True}, "nesterov: unknown field"),
    ]
    for change, message in cases:
        with pytest.raises(ConfigError) as info:
            TrainConfig.from_dict({**train.to_dict(), **change})
        assert str(info.value).startswith(message), (change, str(info.value))


def test_registering_a_name_twice_warns_and_keeps_the_later() -> None:
    from models import register

    original = BASELINES["resnet-20"]
    other = ArchConfig(stages=(StageConfig(1, 16),))
    try:
        with pytest.warns(UserWarning, match="'resnet-20' registered twice"):
            register("resnet-20", other)
        assert BASELINES["resnet-20"] == other
    finally:
        BASELINES["resnet-20"] = original
