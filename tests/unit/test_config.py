import json

import pytest

from climai.config import (
    ConfigError,
    canonical_json,
    config_sha256,
    from_stage_json,
    json_schema,
    load_config,
    stage_slice,
    validate_config,
)
from climai.parents import parent_method, training_waves
from tests.conftest import REPO


def test_default_config_file_is_the_toy_campaign():
    cfg = load_config(REPO / "config" / "config.yaml")
    assert cfg.campaign == "toy"
    assert cfg.variable_names == ["tas", "pr"]
    assert cfg.scale == 8
    assert cfg.data.target.dx == 500.0
    assert cfg.data.target.nx >= 128 and cfg.data.target.ny >= 128
    assert cfg.methods.enabled() == ["bicubic", "quantile-mapping", "unet", "unet-crps"]
    assert cfg.methods.ensembles() == ["unet-crps"]
    assert parent_method(cfg, "unet-crps") == "unet"
    assert training_waves(cfg, ["unet", "unet-crps"]) == [["unet"], ["unet-crps"]]


def test_config_file_sets_every_key_explicitly():
    """config/config.yaml documents every key: validating it equals the defaults plus its values."""
    text = (REPO / "config" / "config.yaml").read_text()
    for key in ["campaign", "results", "seed", "scale", "split", "epochs", "patch", "bands"]:
        assert f"{key}:" in text


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"'sclae' is not known \(did you mean 'scale'\?\)"):
        validate_config({"sclae": 4})


def test_unknown_nested_key_names_its_path():
    with pytest.raises(ConfigError, match=r"'methods.unet.epoch' is not known.*'epochs'"):
        validate_config({"methods": {"unet": {"epoch": 3}}})


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"'scale' = \"eight\""):
        validate_config({"scale": "eight"})


def test_split_must_sum_to_one():
    with pytest.raises(ConfigError, match="split"):
        validate_config({"split": {"train": 0.5, "val": 0.1, "test": 0.1}})


def test_grid_must_be_a_multiple_of_scale():
    with pytest.raises(ConfigError, match=r"data.target.nx=100 is not a multiple of scale=8"):
        validate_config({"data": {"target": {"nx": 100}}})


def test_results_may_not_escape_with_dotdot():
    with pytest.raises(ConfigError, match="results"):
        validate_config({"results": "../../etc"})


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")


def test_training_hyperparameter_changes_only_training_slices():
    a = validate_config({})
    b = validate_config({"methods": {"unet": {"epochs": 99}}})
    for stage in ("ingest", "preprocess"):
        assert config_sha256(stage_slice(a, stage)) == config_sha256(stage_slice(b, stage))
    assert config_sha256(stage_slice(a, "train", "unet")) != config_sha256(
        stage_slice(b, "train", "unet")
    )
    # the bicubic baseline does not depend on the U-Net's hyperparameters
    assert stage_slice(a, "infer", "bicubic") == stage_slice(b, "infer", "bicubic")


def test_stage_slice_round_trips_through_json():
    cfg = validate_config({"seed": 3, "methods": {"unet": {"lr": 1e-3}}})
    rebuilt, _ = from_stage_json(json.dumps(stage_slice(cfg, "train", "unet")))
    assert rebuilt.seed == 3
    assert rebuilt.methods.get("unet").lr == 1e-3
    assert rebuilt.methods.enabled() == ["unet"]


def test_quantile_mapping_is_configured_by_its_registry_name():
    cfg = validate_config({"methods": {"quantile-mapping": {"quantiles": 51}, "nearest": None}})
    assert cfg.methods.get("quantile-mapping").quantiles == 51
    assert "nearest" not in cfg.methods.enabled()
    sl = stage_slice(cfg, "infer", "quantile-mapping")
    assert sl["methods"] == {
        "quantile-mapping": {"type": "quantile-mapping", "quantiles": 51, "max_samples": 2_000_000}
    }
    rebuilt, _ = from_stage_json(json.dumps(sl))
    assert rebuilt.methods.enabled() == ["quantile-mapping"]
    with pytest.raises(ConfigError, match=r"'methods.quantile-mapping.quantile' is not known"):
        validate_config({"methods": {"quantile-mapping": {"quantile": 5}}})
    with pytest.raises(ConfigError, match=r"'methods.qm' is not known.*must be one of: .*quantile"):
        validate_config({"methods": {"qm": {}}})


def test_compare_slice_holds_every_method_and_evaluate_key():
    cfg = validate_config({})
    sl = stage_slice(cfg, "compare")
    assert list(sl["methods"]) == ["bicubic", "nearest", "quantile-mapping", "unet"]
    assert "unet-crps" not in sl["methods"]  # not configured by default
    assert sl["evaluate"]["wet_threshold"] == 0.1


def test_schema_file_matches_the_models():
    on_disk = json.loads((REPO / "workflow" / "schemas" / "config.schema.json").read_text())
    assert on_disk == json_schema(), (
        "regenerate with: climai schema > workflow/schemas/config.schema.json"
    )


def test_config_hash_does_not_depend_on_the_output_location():
    a = stage_slice(validate_config({}), "preprocess")
    b = stage_slice(validate_config({"results": "/elsewhere"}), "preprocess")
    c = stage_slice(validate_config({"seed": 1}), "preprocess")
    assert config_sha256(a) == config_sha256(b) != config_sha256(c)


def test_preprocess_keys_rerun_preprocess_only():
    a = validate_config({})
    b = validate_config({"preprocess": {"min_valid_fraction": 0.9}})
    assert stage_slice(a, "preprocess") != stage_slice(b, "preprocess")
    for stage in ("ingest", "train", "infer", "evaluate"):
        method = None if stage == "ingest" else "unet"
        assert stage_slice(a, stage, method) == stage_slice(b, stage, method)


def test_split_by_time_ranges_and_gap_validate():
    cfg = validate_config(
        {
            "split": {
                "train": ["2016-09-28T14:45", "2016-09-28T17:00"],
                "val": ["2016-09-28T17:15", "2016-09-28T18:00"],
                "test": ["2016-09-28T18:15", "2016-09-28T19:00"],
            }
        }
    )
    assert cfg.split.by_time
    assert validate_config({"split": {"gap": 3}}).split.gap == 3
    with pytest.raises(ConfigError, match="gap applies to fractions only"):
        validate_config(
            {
                "split": {
                    "train": ["2016-09-28T14:45", "2016-09-28T17:00"],
                    "val": ["2016-09-28T17:15", "2016-09-28T18:00"],
                    "test": ["2016-09-28T18:15", "2016-09-28T19:00"],
                    "gap": 1,
                }
            }
        )
    with pytest.raises(ConfigError, match=r"split.val=1.2 must be a fraction"):
        validate_config({"split": {"train": 0.5, "val": 1.2, "test": 0.2}})


def test_infer_tiles_must_sit_on_the_lr_grid():
    with pytest.raises(ConfigError, match="infer.overlap=12 is not a multiple of scale=8"):
        validate_config({"infer": {"overlap": 12}})
    with pytest.raises(ConfigError, match="overlap=512 must be smaller than tile=512"):
        validate_config({"infer": {"overlap": 512}})
    with pytest.raises(ConfigError, match="quantile levels must be in"):
        validate_config({"infer": {"quantiles": [0.5, 1.5]}})


def test_infer_settings_rerun_infer_but_not_train():
    a, b = validate_config({}), validate_config({"infer": {"tile": 256}})
    assert config_sha256(stage_slice(a, "train")) == config_sha256(stage_slice(b, "train"))
    assert config_sha256(stage_slice(a, "infer")) != config_sha256(stage_slice(b, "infer"))


@pytest.mark.parametrize(
    "stage", ["ingest", "preprocess", "train", "infer", "evaluate", "export", "compare", "manifest"]
)
def test_every_stage_slice_of_a_file_campaign_rebuilds(stage):
    """What a rule passes to its command must validate on its own (no toy-world defaults leak in)."""
    cfg = load_config(REPO / "config" / "config.yaml", REPO / "config" / "campaigns" / "fmi.yaml")
    method = "unet" if stage in ("train", "infer", "evaluate", "export") else None
    rebuilt, _ = from_stage_json(json.dumps(stage_slice(cfg, stage, method)))
    assert rebuilt.variable_names == ["pr"]


def test_methods_are_named_instances_of_a_type():
    cfg = validate_config(
        {"methods": {"unet-big": {"type": "unet", "channels": [32, 64, 128]}, "nearest": None}}
    )
    assert cfg.methods.enabled() == ["bicubic", "quantile-mapping", "unet", "unet-big"]
    assert cfg.methods.type_of("unet-big") == "unet"
    assert cfg.methods.get("unet-big").channels == [32, 64, 128]
    assert cfg.methods.get("unet").channels == [16, 32, 64]  # the default U-Net is untouched
    assert cfg.methods.of_type("unet") == ["unet", "unet-big"]
    # each named method has its own slice: changing one does not rerun the other
    sl = stage_slice(cfg, "train", "unet-big")
    assert list(sl["methods"]) == ["unet-big"] and sl["methods"]["unet-big"]["type"] == "unet"
    rebuilt, _ = from_stage_json(json.dumps(sl))
    assert rebuilt.methods.enabled() == ["unet-big"]
    # errors name the method, not the type tag
    with pytest.raises(ConfigError, match=r"'methods.unet-big.epochs' = 0"):
        validate_config({"methods": {"unet-big": {"type": "unet", "epochs": 0}}})
    with pytest.raises(ConfigError, match=r"'methods.unet-big.type' = 'unett'.*must be one of"):
        validate_config({"methods": {"unet-big": {"type": "unett"}}})
    with pytest.raises(ConfigError, match=r"method name 'U Net'"):
        validate_config({"methods": {"U Net": {"type": "unet"}}})


@pytest.mark.parametrize(
    ("config", "overrides", "want"),
    [
        ({"methods": {"nearest": None}}, {"methods": {"nearest": {}}}, {"nearest": {}}),
        ({"methods": {"nearest": None}}, {"methods": {"qdm": {}}}, {"nearest": None, "qdm": {}}),
        ({"methods": {"unet": {"epochs": 2}}}, {"methods": {"unet": {}}}, {"unet": {"epochs": 2}}),
        ({"methods": {"unet": None}}, {"methods": {"unet": None}}, {"unet": None}),
    ],
)
def test_empty_mappings_of_a_configfile_switch_on_what_config_yaml_sets_to_null(
    config, overrides, want
):
    """Snakemake's merge keeps config.yaml's null under a --configfile's `{}`; the Snakefile
    restores the `{}` (and climai's own loader agrees)."""
    from climai.config.loading import deep_merge, restore_empty_mappings

    merged = deep_merge(config, overrides)
    assert restore_empty_mappings(config, overrides)["methods"] == want == merged["methods"]


def test_a_configfile_naming_a_method_keeps_config_yaml_method_order():
    """Snakemake starts from the --configfile and merges config.yaml into it, so naming `unet`
    there (a key that changes no output) put it before bicubic: compare's `methods` parameter
    changed (compare and manifest reran) and the summary's rows were reordered. The Snakefile
    puts the keys back in config.yaml's order, the order climai's own loader gives."""
    import copy

    import yaml
    from snakemake.utils import update_config

    from climai.config.loading import deep_merge, order_like

    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    overrides = {"methods": {"unet": {"workers": 1}, "conv": {"type": "unet"}}}
    merged = copy.deepcopy(overrides)  # what Workflow.configfile makes of the two
    update_config(merged, copy.deepcopy(base))
    update_config(merged, overrides)
    assert next(iter(merged["methods"])) == "unet"  # Snakemake's order, without the fix
    ordered = validate_config(order_like(merged, base)).methods.enabled()
    assert ordered == validate_config(deep_merge(base, overrides)).methods.enabled()
    assert ordered == ["bicubic", "quantile-mapping", "unet", "unet-crps", "conv"]
    assert list(order_like({"b": {"y": 1, "x": 2}, "c": 3}, {"b": {"x": 0}})["b"]) == ["x", "y"]


def test_data_loading_keys_of_a_training_change_no_hash_and_retrain_nothing():
    """workers, loader and memory_limit_gb give the same batches, so bitwise the same model
    (climai/data/dataset.py; checked on the toy campaign: workers 2 and loader stream against
    the defaults): changing one retrained the method and reran everything after it."""
    from climai.config.slices import from_stage_json, split_run_keys

    base = validate_config({})
    loading = {"workers": 2, "loader": "stream", "memory_limit_gb": 0.5}
    other = validate_config({"methods": {"unet": loading}})
    for stage in ("train", "infer", "evaluate", "export", "manifest"):
        a, b = stage_slice(base, stage, "unet"), stage_slice(other, stage, "unet")
        assert config_sha256(a) == config_sha256(b), stage
        assert split_run_keys(a)[0] == split_run_keys(b)[0], stage
    # the job still trains with them: the workflow hands them over apart from the slice
    slice_, run = split_run_keys(stage_slice(other, "train", "unet"))
    rebuilt, _ = from_stage_json(json.dumps(slice_), run)
    assert {k: getattr(rebuilt.methods.get("unet"), k) for k in loading} == loading


def test_run_keys_change_no_hash_and_reach_the_job_apart_from_its_slice():
    """preprocess.progress, infer.progress and methods.<m>.checkpoint_every change no output:
    the hash and the slice Snakemake compares leave them out; a job gets them back from the
    workflow (RUN_KEYS_ENV) where its slice has their section."""
    from climai.config.slices import from_stage_json, split_run_keys

    base = validate_config({})
    quiet = validate_config(
        {"infer": {"progress": False}, "preprocess": {"progress": False},
         "methods": {"unet": {"checkpoint_every": 7}}}
    )  # fmt: skip
    for stage, method in (("preprocess", None), ("infer", "unet"), ("train", "unet")):
        a, b = stage_slice(base, stage, method), stage_slice(quiet, stage, method)
        assert config_sha256(a) == config_sha256(b)
        assert split_run_keys(a)[0] == split_run_keys(b)[0]
    assert config_sha256(stage_slice(base, "train", "unet")) != config_sha256(
        stage_slice(validate_config({"methods": {"unet": {"lr": 1e-3}}}), "train", "unet")
    )
    _, run = split_run_keys(quiet.model_dump(mode="json", by_alias=True))
    loading = {"workers": 0, "loader": "auto", "memory_limit_gb": 2.0}
    assert run == {"preprocess": {"progress": False}, "infer": {"progress": False},
                   "methods": {"unet": {"checkpoint_every": 7, **loading}}}  # fmt: skip
    sliced = canonical_json(split_run_keys(stage_slice(quiet, "infer", "unet"))[0])
    cfg, raw = from_stage_json(sliced, run)
    assert cfg.infer.progress is False and cfg.methods.get("unet").checkpoint_every == 7
    assert "preprocess" not in raw  # only the slice's own sections
    cfg, _ = from_stage_json(sliced)
    assert cfg.infer.progress is True  # the default without the workflow's values


def test_the_export_slice_describes_the_toy_world_of_the_campaigns_seed():
    """The export rule gets its slice (--config-json); the slice lacked ``seed``, so the NetCDF
    ``source`` attribute of a synthetic campaign said 'seed 0' whatever the campaign's seed."""
    from climai.stages.export import target_description

    cfg = validate_config({"seed": 7})
    sliced, _ = from_stage_json(json.dumps(stage_slice(cfg, "export", "bicubic")))
    assert "(seed 7," in target_description(sliced) == target_description(cfg)


def test_calibrate_of_a_deterministic_method_is_refused_before_training():
    """methods.unet.calibrate: true passed validation, trained every epoch, then stopped with
    'calibrate: the model injects no noise (not an ensemble)', naming no key."""
    with pytest.raises(ConfigError, match=r"methods.unet.calibrate=true: only an ensemble"):
        validate_config({"methods": {"unet": {"calibrate": True}}})
    cfg = validate_config({"methods": {"unet-crps": {"calibrate": True}}})
    assert cfg.methods.get("unet-crps").calibrate


def test_infer_tile_must_fit_every_unets_levels_before_any_job():
    """infer.tile: 40 (a multiple of scale 8) with a 5-level U-Net (sizes multiple of 16) passed
    validation, trained, then stopped infer with 'infer.tile=40 is not a multiple of the
    model's 16'."""
    unet = {"unet": {"patch": 32, "channels": [4, 8, 8, 8, 8]}}
    with pytest.raises(
        ConfigError, match=r"infer.tile=40 must be a multiple of 16 for the 5 U-Net"
    ):
        validate_config({"methods": unet, "infer": {"tile": 40, "overlap": 8}})
    assert validate_config({"methods": unet, "infer": {"tile": 48, "overlap": 8}}).infer.tile == 48


def test_an_hr_domain_that_a_unet_cannot_tile_is_refused_before_any_job():
    """scale 2 and a 34 × 34 toy world (a multiple of the scale) with a 3-level U-Net (sizes
    multiple of 4) passed validation and trained, then infer stopped: 'HR domain has 34 cells
    along y, not a multiple of the model's 4'."""
    from climai.io.headers import check_before_jobs
    from climai.io.readers import SourceError
    from climai.synthetic import _ORIGIN

    unet = {"unet": {"patch": 32, "channels": [8, 16, 32]}}
    target = {"source": "synthetic", "nx": 34, "ny": 34, "steps": 48}
    with pytest.raises(ConfigError, match=r"HR domain 34×34 \(data.target.ny × nx\) is not a mul"):
        validate_config({"scale": 2, "data": {"target": target}, "methods": unet,
                         "infer": {"tile": 32, "overlap": 8}})  # fmt: skip
    x0, y0 = _ORIGIN  # a domain of 34 × 34 HR cells of a 64 × 64 world
    domain = {"x": [x0, x0 + 17000], "y": [y0, y0 + 17000]}
    cfg = validate_config({"scale": 2, "data": {"target": {**target, "nx": 64, "ny": 64}},
                           "domain": domain, "methods": unet, "infer": {"tile": 32, "overlap": 8}})  # fmt: skip
    with pytest.raises(SourceError, match=r"HR domain 34×34 \(the synthetic data.target cut"):
        check_before_jobs(cfg, cache=False)


def test_qdm_group_auto_is_described_as_it_chooses():
    """qdm.group's description said auto picks months when the train split covers 'every month
    it predicts'; choose_group asks for every calendar month (June-July training, July
    predicted: one group)."""
    import pandas as pd

    from climai.config.methods import QDMConfig
    from climai.models.qdm import choose_group

    train = pd.date_range("2020-06-01", "2020-07-31 23:00", freq="h").values
    assert choose_group(train, 48, "auto") == "none"
    text = QDMConfig.model_fields["group"].description
    assert "every calendar month (all 12" in text and "it predicts" not in text


def test_preprocess_memory_limit_is_a_size_dask_reads():
    """preprocess.distributed.memory_limit: '4 gigs' passed validation and stopped preprocess
    (scheduler: local) with dask's 'Could not interpret 'gigs' as a byte unit', naming no key."""
    from dask.utils import parse_bytes

    for good in ("4GiB", "4 GB", "500mb", "1e9", ".5GB", "100", "4.5GiB"):
        assert parse_bytes(good) > 0
        validate_config({"preprocess": {"distributed": {"memory_limit": good}}})
    for bad in ("4 gigs", "lots", "-1GB"):
        with pytest.raises(ConfigError, match=f"memory limit '{bad}' must be a number of bytes"):
            validate_config({"preprocess": {"distributed": {"memory_limit": bad}}})
    local = {"scheduler": "local", "distributed": {"memory_limit": "auto"}}
    assert validate_config({"preprocess": local}).preprocess.distributed.memory_limit == "auto"
    with pytest.raises(ConfigError, match="memory_limit=auto is for scheduler: local"):
        validate_config({"preprocess": {**local, "scheduler": "slurm"}})


@pytest.mark.parametrize("start", ["June 2020 first", "2020-13-01"])
def test_a_synthetic_start_that_is_no_iso_time_names_the_key(start):
    """data.target.start took any string: the toy world's times were parsed by ingest, whose
    error ('month must be in 1..12: 2020-13-01') named no key."""
    target = {"source": "synthetic", "start": start}
    with pytest.raises(ConfigError, match=r"data.target.start .* is not an ISO 8601 time"):
        validate_config({"data": {"target": target}})
    assert validate_config({"data": {"target": {"start": "2021-01-01T06:00"}}})


def test_calibrate_of_a_one_member_ensemble_is_refused():
    """unet-crps with members: 1 and calibrate: true trained and logged 'calibrated noise ×1:
    spread/skill nan on validation' (and recorded it in the model card), with no error."""
    with pytest.raises(ConfigError, match=r"methods.unet-crps.calibrate=true needs members >= 2"):
        validate_config({"methods": {"unet-crps": {"calibrate": True, "members": 1}}})
    assert validate_config({"methods": {"unet-crps": {"members": 1}}})
