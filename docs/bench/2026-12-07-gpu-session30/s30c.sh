#!/bin/bash
# Next GPU session: more SD2 768 px processes for issue 11's median (target 0.9; 0.896 over 21 after
# session 30, 10 of 21 at or above). Each process compiles in its own empty Inductor cache (an
# independent draw of Inductor's picks; the meta records inductor_cache "empty" and the code digest)
# and takes ~230 s; the results are packed after each, so a call cut off keeps the finished ones.
# PROCESSES=2 fits one 600 s call on a warm machine.
set -u
. scripts/device/bench_env.sh s30c
m="bigain-merge r=0.7 radius=1 plan-reuse"
for p in $(seq 1 "${PROCESSES:-2}"); do
  export TORCHINDUCTOR_CACHE_DIR=$(mktemp -d)
  s=$(date +%s)
  timeout "${UNET_LIMIT:-280}" python3 scripts/bench_unet.py --res 768 --modes cudagraphs --rounds 2 --loop-calls 50 \
    --methods plain plain-copy "$m" --out /tmp/r/sd2-768-p$p > /tmp/r/sd2-768-p$p.log 2>&1
  echo "p$p rc=$? $(( $(date +%s) - s )) s"; grep "loop" /tmp/r/sd2-768-p$p.log | cut -c1-250 | tail -3
  pack
done
