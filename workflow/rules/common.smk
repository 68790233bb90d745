# Validation of the config and the input functions of every rule.
from climai.config import ConfigError, canonical_json, stage_slice, validate_config
from climai.models import TRAINABLE
from climai.paths import CampaignPaths

try:
    CFG = validate_config(config)
except ConfigError as err:
    raise WorkflowError(str(err)) from None

PATHS = CampaignPaths(CFG.campaign_dir)
METHODS = CFG.methods.enabled()
EMULATORS = [m for m in METHODS if m in TRAINABLE]


wildcard_constraints:
    method="|".join(METHODS) or "none",


def stage_config(stage):
    """A params function: the JSON config slice a stage depends on (reruns when it changes)."""

    def params(wildcards):
        return canonical_json(stage_slice(CFG, stage, wildcards.get("method")))

    return params


def infer_inputs(wildcards):
    """The dataset, and the trained model for emulators (baselines need no training)."""
    inputs = {"dataset": PATHS.dataset, "stats": PATHS.stats}
    if wildcards.method in EMULATORS:
        inputs["model"] = PATHS.model(wildcards.method)
    return inputs


def all_outputs(wildcards):
    """Every method's metrics, figure and NetCDF export, and the comparison of all methods."""
    outs = [PATHS.comparison, PATHS.summary]
    outs += [PATHS.metrics(m) for m in METHODS]
    outs += [PATHS.export(m, v) for m in METHODS for v in CFG.variable_names]
    return outs
