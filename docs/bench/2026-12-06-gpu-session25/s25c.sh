#!/bin/bash
# Session 25 call 3: SD2 768 px, merge 0.7 + radius 1 + plan reuse, loops of 50 calls, with a
# second compiled copy of plain in the same rounds (the floor between two compiles of one model).
set -u
. scripts/device/bench_env.sh s25c
s=$(date +%s)
timeout ${UNET_LIMIT:-280} python3 scripts/bench_unet.py --res 768 --modes cudagraphs --rounds ${ROUNDS:-3} --loop-calls 50 \
  --methods plain plain-copy "bigain-merge r=0.7 radius=1 plan-reuse" --out /tmp/r/sd2-768-copy > /tmp/r/sd2-768-copy.log 2>&1
echo "bench rc=$? $(( $(date +%s) - s )) s"; grep "set up\|loop" /tmp/r/sd2-768-copy.log | cut -c1-250 | tail -8
pack
