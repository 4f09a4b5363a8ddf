#!/bin/bash
# Session 25 call 2: the loop-length probe (is the loop's idle time the first call's host time?),
# then SD2 768 px merge 0.7 + radius 1 + plan reuse against plain in one bench_unet process with
# loops of 50 calls (a sampler's length) and 3 rounds.
set -u
. scripts/device/bench_env.sh s25b  # (inline set-up lines when it ran; the same commands)
s=$(date +%s)
timeout 200 python3 docs/bench/2026-12-06-gpu-session25/loop_length.py /tmp/r/loop_length.json > /tmp/r/loop_length.log 2>&1
echo "probe rc=$? $(( $(date +%s) - s )) s"; tail -8 /tmp/r/loop_length.log; pack
s=$(date +%s)
timeout ${UNET_LIMIT:-300} python3 scripts/bench_unet.py --res 768 --modes cudagraphs --rounds 3 --loop-calls 50 \
  --methods plain "bigain-merge r=0.7 radius=1 plan-reuse" --out /tmp/r/sd2-768-l50 > /tmp/r/sd2-768-l50.log 2>&1
echo "bench rc=$? $(( $(date +%s) - s )) s"; tail -5 /tmp/r/sd2-768-l50.log
pack
