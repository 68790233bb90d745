"""Bad configurations: each is rejected before any job runs, with a message naming the problem."""

from __future__ import annotations

import pytest

from climai.config import ConfigError, load_config, validate_config

BAD_CONFIGS = [
    ({"sclae": 4}, r"'sclae' is not known \(did you mean 'scale'\?\)"),
    (
        {"methods": {"unet": {"epoch": 3}}},
        r"'methods.unet.epoch' is not known \(did you mean 'epochs'\?\)",
    ),
    ({"methods": {"unett": {}}}, r"'methods.unett' is not known \(did you mean 'unet'\?\)"),
    ({"scale": "eight"}, r"'scale' = \"eight\""),
    ({"scale": 1}, r"'scale' = 1: Input should be greater than or equal to 2"),
    (
        {"split": {"train": 0.5, "val": 0.1, "test": 0.1}},
        r"train \+ val \+ test must be 1, got 0.7",
    ),
    (
        {"split": {"train": 1.2, "val": -0.1, "test": -0.1}},
        r"split.train=1.2 must be a fraction between 0 and 1",
    ),
    ({"data": {"target": {"nx": 100}}}, r"data.target.nx=100 is not a multiple of scale=8"),
    ({"methods": {"unet": {"patch": 60}}}, r"methods.unet.patch=60 is not a multiple of scale=8"),
    ({"methods": {"unet": {"patch": 256}}}, r"patch=256 is larger than the HR domain 128×128"),
    (
        {"methods": {"unet": {"patch": 8, "channels": [8, 16, 32, 64, 128]}}},
        r"must be a multiple of 16 for 5 U-Net levels",
    ),
    ({"results": "../../etc"}, r"results folder '../../etc' must not contain '..'"),
    ({"campaign": "a/b"}, r"campaign name 'a/b' must be letters, digits"),
    (
        {"variables": [{"name": "x; touch pwned", "units": "K"}]},
        r"variable name 'x; touch pwned' must be letters",
    ),
    (
        {"variables": [{"name": "tas", "units": "K"}, {"name": "tas", "units": "K"}]},
        r"names must be unique",
    ),
    (
        {"variables": [{"name": "tas", "units": "K", "kind": "rain"}]},
        r"'variables.0.kind' = \"rain\"",
    ),
    (
        {"variables": [{"name": "huss", "units": "1"}]},
        r"variables \['huss'\] are not in the synthetic toy world; it provides tas, pr",
    ),
    ({"variables": []}, r"'variables' = \[\]: List should have at least 1 item"),
    ({"methods": {"unet": {"lr": 0}}}, r"'methods.unet.lr' = 0: Input should be greater than 0"),
    ({"methods": {"unet": {"epochs": 0}}}, r"'methods.unet.epochs' = 0"),
    ({"evaluate": {"bands": [[8, 4]]}}, r"band \[8.0, 4.0\] must be \[lo, hi\]"),
    ({"seed": -1}, r"'seed' = -1"),
]


@pytest.mark.parametrize(("raw", "message"), BAD_CONFIGS, ids=[m[:40] for _, m in BAD_CONFIGS])
def test_bad_config_is_rejected_with_a_message_naming_it(raw, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(raw)


def test_config_that_is_not_a_mapping(tmp_path):
    (tmp_path / "c.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=r"must hold a mapping at the top level"):
        load_config(tmp_path / "c.yaml")


def test_config_with_a_yaml_syntax_error_names_the_file(tmp_path):
    (tmp_path / "c.yaml").write_text("scale: [8\n")
    with pytest.raises(ConfigError, match=r"c.yaml' is not valid YAML"):
        load_config(tmp_path / "c.yaml")


def test_yaml_tags_that_build_objects_are_refused(tmp_path):
    (tmp_path / "c.yaml").write_text("seed: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "c.yaml")
    assert not (tmp_path / "pwned").exists()
