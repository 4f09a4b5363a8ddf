#!/bin/bash
# Next GPU session, call 1: where the 768 px merged model's ~0.14 ms a call beyond its kernels goes.
# Profile plain, plain-copy (compiled anew) and merge 0.7 + radius 1 + plan reuse in one process,
# 50-call loops, with the host's time to issue a call and Chrome traces of the profiled calls
# (trace_*.json.gz: GPU idle between graph replays, and what the host does then).
set -u
. scripts/device/bench_env.sh s27a
s=$(date +%s)
timeout ${PROFILE_LIMIT:-360} python3 scripts/profile_unet.py --res 768 --mode cudagraphs --loop-calls 50 --trace \
  --methods plain plain-copy "bigain-merge r=0.7 radius=1 plan-reuse" --out /tmp/r/profile-768 > /tmp/r/profile-768.log 2>&1
echo "profile rc=$? $(( $(date +%s) - s )) s"; grep "^==\|idle in a loop" /tmp/r/profile-768.log | cut -c1-260
pack
