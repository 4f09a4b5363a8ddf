#!/bin/bash
# Session 29, the short form of s28c.sh for a budget under ~500 s: the GPU test of the realised
# unmerge, then plain, the in-graph gather (default) and the realised gather (UNMERGE_REALIZE=True)
# profiled at 768 px in one process with traces, each split against plain by kernel_choices.py.
# (The custom-op unmerge, UNMERGE_IN_GRAPH=False, was profiled in sessions 21 and 25.)
set -u
. scripts/device/bench_env.sh s29b
timeout ${TEST_LIMIT:-90} python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_kernels.py \
  -k "realised_unmerge" > /tmp/r/gpu-tests.log 2>&1
echo "gpu tests rc=$?"; tail -2 /tmp/r/gpu-tests.log; pack
m="bigain-merge r=0.7 radius=1 plan-reuse"
methods=(plain "$m" "$m @UNMERGE_REALIZE=True")
[ -n "${SKIP_DEFAULT:-}" ] && methods=(plain "$m @UNMERGE_REALIZE=True")  # budget: the default's own profiles are sessions 21-28's
s=$(date +%s)
timeout ${PROFILE_LIMIT:-300} python3 scripts/profile_unet.py --res 768 --mode cudagraphs --loop-calls 50 --trace \
  --methods "${methods[@]}" --out /tmp/r/unmerge-768 > /tmp/r/unmerge-768.log 2>&1
echo "profile rc=$? $(( $(date +%s) - s )) s"; grep "^==\|idle in a loop" /tmp/r/unmerge-768.log | cut -c1-200
for t in /tmp/r/unmerge-768/trace_bigain*.json.gz; do
  python3 scripts/kernel_choices.py /tmp/r/unmerge-768/trace_plain.json.gz "$t" --top 20 --out "${t%.json.gz}.choices.md" | sed -n 1,3p
done
pack
