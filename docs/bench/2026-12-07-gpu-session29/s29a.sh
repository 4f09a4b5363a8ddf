#!/bin/bash
# Session 29 call: the three unmerges as 768 px loop times in one process (bench_unet variants run in
# the same rounds as plain): the in-graph gather (default), the custom op (UNMERGE_IN_GRAPH=False,
# contiguous rows for the norms plus one materialising kernel) and the realised gather
# (UNMERGE_REALIZE=True, rows written once inside the norm's kernel). Its own Inductor cache.
set -u
. scripts/device/bench_env.sh s29a
m="bigain-merge r=0.7 radius=1 plan-reuse"
s=$(date +%s)
timeout ${UNET_LIMIT:-560} python3 scripts/bench_unet.py --res 768 --modes cudagraphs --rounds ${ROUNDS:-2} --loop-calls 50 \
  --methods plain plain-copy "$m" --variant UNMERGE_IN_GRAPH=False --variant UNMERGE_REALIZE=True \
  --out /tmp/r/unmerge-768 > /tmp/r/unmerge-768.log 2>&1
echo "bench rc=$? $(( $(date +%s) - s )) s"; grep "set up\|loop" /tmp/r/unmerge-768.log | cut -c1-250 | tail -10
pack
