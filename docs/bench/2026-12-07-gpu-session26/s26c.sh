#!/bin/bash
# Session 26 call 1 (never got a machine; the next session's first call): the SD2 768 px run first (plain,
# plain-copy compiled anew in a fresh Inductor cache, merge 0.7 + radius 1 + plan reuse; 50-call
# loops), then the unmerge block probe if time is left.
set -u
. scripts/device/bench_env.sh s26c
s=$(date +%s)
timeout ${UNET_LIMIT:-400} python3 scripts/bench_unet.py --res 768 --modes cudagraphs --rounds ${ROUNDS:-3} --loop-calls 50 \
  --methods plain plain-copy "bigain-merge r=0.7 radius=1 plan-reuse" --out /tmp/r/sd2-768-copy > /tmp/r/sd2-768-copy.log 2>&1
echo "bench rc=$? $(( $(date +%s) - s )) s"; grep "set up\|loop" /tmp/r/sd2-768-copy.log | cut -c1-250 | tail -8
pack
s=$(date +%s)
timeout ${PROBE_LIMIT:-60} python3 docs/bench/2026-12-06-gpu-session25/unmerge_block.py > /tmp/r/unmerge_block.log 2>&1
echo "probe rc=$? $(( $(date +%s) - s )) s"; tail -5 /tmp/r/unmerge_block.log; pack
