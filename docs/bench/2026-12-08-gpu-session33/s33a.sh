#!/bin/bash
# Session 33, call 2 (after s32a.sh showed the variant reusing the default's graph and the rule's
# tests assuming too few rows): the rule's GPU test at a size where Inductor leaves the gathered norm
# DEFAULT (72x72 latent on an H100), in its own Inductor cache; then one 768 px bench_unet process
# in an empty cache: plain, merge 0.7 + radius 1 + plan reuse, and the same under
# --variant PERSISTENT_GATHER_NORMS=True (now compiled behind its own frame), 4 rounds.
set -u
. scripts/device/bench_env.sh s33a
if [ "${TEST_LIMIT:-120}" != 0 ]; then  # TEST_LIMIT=0: the bench alone
  TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) timeout "${TEST_LIMIT:-120}" python3 -m pytest -q -p no:cacheprovider -m gpu \
    tests/test_inductor_choices.py > /tmp/r/rule-gpu-test.log 2>&1
  echo "rule GPU test rc=$?"; tail -3 /tmp/r/rule-gpu-test.log
fi
pack
out=/tmp/r/sd2-768-pgn
s=$(date +%s)
timeout "${UNET_LIMIT:-300}" python3 scripts/bench_unet.py --res 768 --modes cudagraphs --rounds 4 --loop-calls 50 \
  --methods plain "bigain-merge r=0.7 radius=1 plan-reuse" --variant PERSISTENT_GATHER_NORMS=True \
  --out "$out" > "$out.log" 2>&1
echo "bench rc=$? $(( $(date +%s) - s )) s"; grep "set up\|PERSISTENT\|loop\|Error" "$out.log" | cut -c1-250 | tail -14
pack
