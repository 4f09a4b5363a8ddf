#!/bin/bash
# Session 33, for a budget of ~220 s of machine time: does the rule change the 768 px merged
# model's norm on the GPU, and what does it cost or save? profile_unet.py (traces, 50-call loops)
# of merge 0.7 + radius 1 + plan reuse and the same @PERSISTENT_GATHER_NORMS=True in one process,
# each compiled anew (profile_unet resets Dynamo per method); kernel_choices.py splits the
# variant's trace against the default's. Then, with what time is left, the rule's GPU test.
set -u
. scripts/device/bench_env.sh s33b
m="bigain-merge r=0.7 radius=1 plan-reuse"
s=$(date +%s)
timeout "${PROFILE_LIMIT:-140}" python3 scripts/profile_unet.py --res 768 --mode cudagraphs --loop-calls 50 --trace \
  --methods "$m" "$m @PERSISTENT_GATHER_NORMS=True" --out /tmp/r/prof > /tmp/r/prof.log 2>&1
echo "profile rc=$? $(( $(date +%s) - s )) s"; grep "^== \|idle in a loop\|PERSISTENT\|loop" /tmp/r/prof.log | cut -c1-200 | head -12
a=/tmp/r/prof/trace_bigain-merge_r_0.7_radius_1_plan-reuse.json.gz
for t in /tmp/r/prof/trace_*PERSISTENT*.json.gz; do
  [ -f "$a" ] && [ -f "$t" ] && python3 scripts/kernel_choices.py "$a" "$t" --top 12 --out /tmp/r/variant-vs-default.md | head -20
done
ls /tmp/r/prof 2>/dev/null
pack
if [ "${TEST_LIMIT:-70}" != 0 ]; then
  TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) timeout "${TEST_LIMIT:-70}" python3 -m pytest -q -p no:cacheprovider -m gpu \
    tests/test_inductor_choices.py > /tmp/r/rule-gpu-test.log 2>&1
  echo "rule GPU test rc=$?"; tail -3 /tmp/r/rule-gpu-test.log
  pack
fi
