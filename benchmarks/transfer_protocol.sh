#!/usr/bin/env bash
# Leave one source out (issue 19): prepare the four real radar sources once, then for each one
# train the pooled emulators on the other three and score them on it.
#   bash benchmarks/transfer_protocol.sh [held-out source ...]   (default: all four)
# Wall times per step go to results/transfer_protocol_times.txt; the tables are each campaign's
# results/transfer-<source>/evaluation/summary.md, gathered by benchmarks/transfer_table.py.
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCES=(knmi fmi mrms-conus bom-melbourne)
HELD=("${@:-bom-melbourne fmi knmi mrms-conus}")
read -r -a HELD <<< "${HELD[*]}"
TIMES=results/transfer_protocol_times.txt
mkdir -p results
for s in "${SOURCES[@]}"; do
  start=$(date +%s)
  snakemake "results/$s/prep/dataset.zarr" --cores 2 --configfile "config/campaigns/$s.yaml"
  echo "prepare $s $(( $(date +%s) - start )) s" >> "$TIMES"
done
for h in "${HELD[@]}"; do
  start=$(date +%s)
  for target in models/unet/model.pt models/unet-crps/model.pt evaluation/summary.md; do
    snakemake "results/transfer-$h/$target" --cores 2 --configfile "config/campaigns/transfer-$h.yaml"
  done
  echo "transfer-$h $(( $(date +%s) - start )) s" >> "$TIMES"
done
python benchmarks/transfer_table.py "${HELD[@]}"
