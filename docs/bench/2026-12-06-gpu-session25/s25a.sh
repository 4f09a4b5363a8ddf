#!/bin/bash
# Session 25 call 1: the four patched-model GPU tests on the fused plan and the merge/unmerge kernel
# tests (unmerge now uses the merges' channel block), then a 768 px profile of plain, merge 0.7 +
# radius 1 + plan reuse, and the same with the custom-op unmerge (UNMERGE_IN_GRAPH=False).
set -u
. scripts/device/bench_env.sh s25a  # (inline set-up lines when it ran; the same commands)
s=$(date +%s)
timeout 200 python3 -m pytest -q -m gpu tests/test_kernels.py -k "patched_models or merge_unmerge" > /tmp/r/gpu-tests.log 2>&1
echo "gpu tests rc=$? $(( $(date +%s) - s )) s"; tail -2 /tmp/r/gpu-tests.log; grep -E "^FAILED|Error" /tmp/r/gpu-tests.log | head -5; pack
s=$(date +%s)
timeout ${PROFILE_LIMIT:-330} python3 scripts/profile_unet.py --res 768 --mode cudagraphs --methods plain \
  "bigain-merge r=0.7 radius=1 plan-reuse" "bigain-merge r=0.7 radius=1 plan-reuse @UNMERGE_IN_GRAPH=False" \
  --out /tmp/r/profile-768 > /tmp/r/profile-768.log 2>&1
echo "profile rc=$? $(( $(date +%s) - s )) s"; tail -25 /tmp/r/profile-768.log
pack
