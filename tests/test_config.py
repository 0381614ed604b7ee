from pathlib import Path

import pytest

from medseg.config import Config, from_dict, load_config, save_config
from medseg.errors import ConfigError


def test_defaults_validate():
    config = load_config()
    assert config.model.name == "unet"
    assert config.train.amp == "auto"


def test_overrides_parse_yaml_values():
    config = load_config(
        None,
        [
            "train.lr=3e-4",
            "data.patch_size=[64,96]",
            "train.snapshots=false",
            "model.params={channels: [8, 16]}",
        ],
    )
    assert config.train.lr == pytest.approx(3e-4)
    assert config.data.patch_size == [64, 96]
    assert config.train.snapshots is False
    assert config.model.params == {"channels": [8, 16]}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1", "did you mean train.lr"),
        ("trian.epochs=1", "did you mean train"),
        ("train.epochs=abc", "train.epochs: cannot use 'abc' as int"),
        ("train.optimizer=sgd2", "train.optimizer"),
        ("train.lr", "expected KEY=VALUE"),
        ("data.patch_size=[8,8]", "patch_size"),
    ],
)
def test_bad_values_give_one_line_hints(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value)


def test_yaml_round_trip(tmp_path: Path):
    config = load_config(None, ["train.epochs=7", "data.labels={background: 0, cell: 1}"])
    save_config(config, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == config
    assert isinstance(again, Config)


def test_config_file_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: cannot read config"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_nested_unknown_key_from_file(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epocs: 3\n")
    with pytest.raises(ConfigError, match="did you mean train.epochs"):
        load_config(path)


def test_from_dict_rejects_non_mapping_section():
    with pytest.raises(ConfigError, match="train: expected a mapping"):
        from_dict({"train": 3})


def test_off_and_on_stay_words_for_string_fields(tmp_path: Path):
    assert load_config(None, ["train.amp=off"]).train.amp == "off"
    assert load_config(None, ["train.snapshots=off"]).train.snapshots is False
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  amp: off\n  progress: no\n")
    config = load_config(path)
    assert config.train.amp == "off" and config.train.progress is False


def test_regions_must_be_the_labels_after_background_in_order():
    ok = load_config(None, ["data.labels={background: 0, a: 1, b: 2}", "data.regions={a: [1, 3], b: [2, 3]}"])
    assert ok.data.regions == {"a": [1, 3], "b": [2, 3]}
    with pytest.raises(ConfigError, match="classes 1..2 of data.labels in order"):
        load_config(None, ["data.labels={background: 0, b: 1, a: 2}", "data.regions={a: [1, 3], b: [2, 3]}"])
    with pytest.raises(ConfigError, match="semantic task"):
        load_config(None, ["task=instance", "data.regions={a: [1]}"])
    with pytest.raises(ConfigError, match="mask value of a region"):
        load_config(None, ["data.regions={a: [1, 3]}", "data.ignore_index=3"])
