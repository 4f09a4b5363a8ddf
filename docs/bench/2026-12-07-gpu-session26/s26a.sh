#!/bin/bash
# Session 26 call 1: the unmerge kernel's channel block (64 vs 128; no compile, ~20 s), then SD2
# 768 px merge 0.7 + radius 1 + plan reuse against plain and a second compile of plain
# (plain-copy: the floor between two compiles of one model) in one process, 50-call loops.
set -u
. scripts/device/bench_env.sh s26a
s=$(date +%s)
timeout 100 python3 docs/bench/2026-12-06-gpu-session25/unmerge_block.py > /tmp/r/unmerge_block.log 2>&1
echo "probe rc=$? $(( $(date +%s) - s )) s"; tail -5 /tmp/r/unmerge_block.log; pack
s=$(date +%s)
timeout ${UNET_LIMIT:-420} python3 scripts/bench_unet.py --res 768 --modes cudagraphs --rounds ${ROUNDS:-3} --loop-calls 50 \
  --methods plain plain-copy "bigain-merge r=0.7 radius=1 plan-reuse" --out /tmp/r/sd2-768-copy > /tmp/r/sd2-768-copy.log 2>&1
echo "bench rc=$? $(( $(date +%s) - s )) s"; grep "set up\|loop" /tmp/r/sd2-768-copy.log | cut -c1-250 | tail -8
pack
