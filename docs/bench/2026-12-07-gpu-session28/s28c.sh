#!/bin/bash
# Next GPU session, call 1: the three unmerges in one process (in-graph gather, the default; the
# custom op, which hands the norms contiguous rows; the in-graph gather realised by Inductor,
# launch.UNMERGE_REALIZE, written once inside the norm's kernel), profiled with traces, then split with
# kernel_choices.py: the picks' difference (sites launched with other grids) apart from what each
# unmerge itself costs (the kernels only one graph has). bench_env.sh gives it its own Inductor cache.
set -u
. scripts/device/bench_env.sh s28c
timeout ${TEST_LIMIT:-150} python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_kernels.py \
  -k "realised_unmerge or patched_models" > /tmp/r/gpu-tests.log 2>&1
echo "gpu tests rc=$?"; tail -2 /tmp/r/gpu-tests.log; pack
s=$(date +%s)
timeout ${PROFILE_LIMIT:-400} python3 scripts/profile_unet.py --res 768 --mode cudagraphs --loop-calls 50 --trace \
  --methods plain "bigain-merge r=0.7 radius=1 plan-reuse" "bigain-merge r=0.7 radius=1 plan-reuse @UNMERGE_IN_GRAPH=False" \
  "bigain-merge r=0.7 radius=1 plan-reuse @UNMERGE_REALIZE=True" \
  --out /tmp/r/unmerge-768 > /tmp/r/unmerge-768.log 2>&1
echo "profile rc=$? $(( $(date +%s) - s )) s"; grep "^==\|idle in a loop" /tmp/r/unmerge-768.log | cut -c1-200
for t in /tmp/r/unmerge-768/trace_bigain*.json.gz; do
  python3 scripts/kernel_choices.py /tmp/r/unmerge-768/trace_plain.json.gz "$t" --top 20 --out "${t%.json.gz}.choices.md" | sed -n 1,3p
done
pack
