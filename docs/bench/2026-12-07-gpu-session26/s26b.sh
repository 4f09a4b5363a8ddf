#!/bin/bash
# Session 26 call 2: DiT-XL/2 512 px batch 16, merge 0.7 (per-block plan, the default) against
# plain and plain-copy in one process, 50-call loops.
set -u
. scripts/device/bench_env.sh s26b
s=$(date +%s)
timeout ${DIT_LIMIT:-520} python3 scripts/bench_unet.py --model dit-xl2 --res 512 --batch 16 --eager-only --modes cudagraphs \
  --rounds ${ROUNDS:-3} --loop-calls 50 --methods plain plain-copy "bigain-merge r=0.7" --out /tmp/r/dit-512-copy > /tmp/r/dit-512-copy.log 2>&1
echo "bench rc=$? $(( $(date +%s) - s )) s"; grep "set up\|loop" /tmp/r/dit-512-copy.log | cut -c1-250 | tail -8
pack
