#!/usr/bin/env bash
# Usage: bash scripts/device/throughput_probe.sh [MODEL ...]
#
# How to run a long sweep fastest on the GPU machine: times the classification of 500 images
# (BiGain merge 0.7, no FID) with one process at batch 250 and 1000, and with 4 processes sharing
# the GPU (torchrun, gloo: cli/validate.py process_group_plan), and prints each part's seconds and
# the ms per call. Needs .whl/ (diffusers, tomesd) and .data/ (Fashion-MNIST test files).
set -u
export PYTHONPATH=/tmp/site:$PWD BIGAIN_FMNIST_DIR=$PWD/.data TORCH_LOGS=-all PYTHONUNBUFFERED=1
[ -d /tmp/site/diffusers ] || python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
mkdir -p /tmp/probe
models=${*:-builtin:fmnist-dit builtin:fmnist-unet}
common=(sweep --grid none bigain-merge:ratio=0.7 --limit 500 --no-fid --device cuda --no-progress --drift-inputs 0)
for model in $models; do
  tag=${model#builtin:}
  for run in "1 250" "1 1000" "4 250"; do
    set -- $run
    out=/tmp/probe/$tag-p$1-b$2; rm -rf "$out"
    start=$(date +%s)
    if [ "$1" = 1 ]; then
      python3 -m bigain_export.cli.main "${common[@]}" --model "$model" --batch-size "$2" --out "$out" > "$out.log" 2>&1
    else
      torchrun --standalone --nproc-per-node "$1" -m bigain_export.cli.main "${common[@]}" --model "$model" \
        --batch-size "$2" --out "$out" > "$out.log" 2>&1
    fi
    echo "== $tag procs=$1 batch=$2: exit $? in $(( $(date +%s) - start )) s"
    grep -E "sweep \[" "$out.log" | sed -E 's/.*(sweep \[)/\1/' | cut -c1-150
    grep -E "Error|error" "$out.log" | grep -v -i warn | tail -3
  done
done
