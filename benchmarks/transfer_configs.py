"""Write config/campaigns/transfer-<source>.yaml from the source campaigns' data sections (issue 19).

python benchmarks/transfer_configs.py ['{"lr": 0.002}']   (overrides of the defaults P, as JSON)
"""

import json
import pathlib
import re
import sys

root = pathlib.Path("config/campaigns")
SOURCES = ["knmi", "fmi", "mrms-conus", "bom-melbourne"]
SINGLE = {
    "knmi": "mrms-conus",
    "fmi": "mrms-conus",
    "mrms-conus": "knmi",
    "bom-melbourne": "mrms-conus",
}
# The U-Net's keys after train_on, shared by the pooled unet and unet-single (same budget).
UNET = """    normalisation: physical   # log1p(mm h-1), offset 1, mean 0, std 1: the same on every radar
    grid_channel: true        # log2 of the HR spacing in km as an input channel
    coarsen_sources: {coarsen}   # each radar also coarsened 2x and 4x: more events, more spacings
    time_features: false      # single-day events: the date would name the radar
    augment: true             # flips and 90° rotations (rain only, no orography or wind)
    min_wet: {min_wet}
    fallback: true            # val RMSE above bicubic's: ship bicubic (flagged either way)
    constraint: {constraint}      # every LR block's mean is kept (the truth's, exactly)
    channels: {channels}
    loss: {loss}
    loss_space: {loss_space}  # log1p space; physical (mm h-1) transferred worse
    lr: {lr}
    warmup_steps: 30
    epochs: {epochs}
    patience: {epochs}
    pooled_patches: {patches}
    patch: {patch}
    batch: 16
    patches_per_step: 16      # validation: 16 patches per val step of each train_on radar
"""
METHOD = (
    """  unet:                   # pooled U-Net: the other three radars, never this one
    train_on: [{others}]
"""
    + UNET
    + """  unet-crps:              # fine-tuned from the pooled U-Net, spread calibrated on validation
    train_on: [{others}]
    init_from: {{method: unet}}
    normalisation: physical
    grid_channel: true
    coarsen_sources: {crps_coarsen}   # fine-tuned on the unet's coarsened copies too
    time_features: false
    augment: true
    min_wet: {min_wet}
    calibrate: true           # spread/skill 1 on the validation patches
    calibrate_by: {crps_calibrate}   # spread = factor x members' mean x CV of the 3x3 LR cells around
    departure_blur: {crps_blur}   # sigma (HR cells) smoothing the members' grid-scale departures
    channels: {channels}
    lr: {crps_lr}
    warmup_steps: 10
    epochs: {crps_epochs}
    patience: {crps_epochs}
    pooled_patches: {crps_patches}
    patch: {patch}
    batch: 8
    patches_per_step: 16
    members: {crps_members}   # CRPS 0.014-0.017 below 8 members on all four held out (BENCHMARKS s. 45)
  unet-single:            # the same U-Net and budget, trained on one radar only ({single})
    type: unet
    train_on: [{single}]
"""
    + UNET
)

P = dict(
    min_wet=0.05,
    coarsen="[2, 4]",
    channels="[16, 32, 64, 128]",
    loss="mse",
    loss_space="transformed",
    constraint="conserve",
    lr=0.0007,
    epochs=3,
    patches=3200,
    patch=64,
    crps_lr=0.0003,
    crps_epochs=1,
    crps_patches=160,
    crps_coarsen="[2, 4]",
    crps_calibrate="roughness",
    crps_blur=1.0,
    crps_members=16,
)
if len(sys.argv) > 1:
    P.update(json.loads(sys.argv[1]))
for held in SOURCES:
    src = (root / f"{held}.yaml").read_text()
    body = src.split("\nmethods:")[0]
    body = re.sub(
        r"^campaign: .*$",
        f"campaign: transfer-{held}\nprepared: {{campaign: {held}}}   # "
        f"its prepared data, as made by config/campaigns/{held}.yaml",
        body,
        flags=re.M,
    )
    # keep the source's own header comments out: a short one instead
    lines = body.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("campaign:"))
    others = ", ".join(s for s in SOURCES if s != held)
    head = f"""# Leave one source out (issue 19): emulators trained on {others}
# and scored on {held}, a radar, region and resolution they never saw. The data keys below are
# config/campaigns/{held}.yaml's, so that this campaign reuses its prep/ (checked by config hash).
#   the whole protocol: benchmarks/transfer_protocol.sh (README, "Transfer across radars")
#   snakemake --cores 2 --configfile config/campaigns/transfer-{held}.yaml
# quantile-mapping is fitted on {held}'s own train split: a reference that saw the target radar.
"""
    methods = "\nmethods:\n  bicubic: {}\n  quantile-mapping: {}\n" + METHOD.format(
        others=others, single=SINGLE[held], **P
    )
    (root / f"transfer-{held}.yaml").write_text(
        head + "\n".join(lines[start:]).rstrip() + "\n" + methods
    )
