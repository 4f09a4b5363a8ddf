#!/bin/bash
# Next GPU session, call 1: the two unmerges in one process (in-graph gather, the default, and the
# custom op, which hands the norms contiguous rows), profiled with traces, then split with
# kernel_choices.py: the picks' difference (sites launched with other grids) apart from what each
# unmerge itself costs (the kernels only one graph has). bench_env.sh gives it its own Inductor cache.
set -u
. scripts/device/bench_env.sh s28c
s=$(date +%s)
timeout ${PROFILE_LIMIT:-300} python3 scripts/profile_unet.py --res 768 --mode cudagraphs --loop-calls 50 --trace \
  --methods plain "bigain-merge r=0.7 radius=1 plan-reuse" "bigain-merge r=0.7 radius=1 plan-reuse @UNMERGE_IN_GRAPH=False" \
  --out /tmp/r/unmerge-768 > /tmp/r/unmerge-768.log 2>&1
echo "profile rc=$? $(( $(date +%s) - s )) s"; grep "^==\|idle in a loop" /tmp/r/unmerge-768.log | cut -c1-200
for t in /tmp/r/unmerge-768/trace_bigain*.json.gz; do
  python3 scripts/kernel_choices.py /tmp/r/unmerge-768/trace_plain.json.gz "$t" --top 20 --out "${t%.json.gz}.choices.md" | sed -n 1,3p
done
pack
