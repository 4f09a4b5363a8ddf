#!/bin/bash
# Next GPU session: more SD2 768 px processes for issue 11's median (target 0.9; 0.896 over 21 after
# session 30), and the cache split measured directly: processes that compiled in an empty Inductor
# cache gave a median share of 0.932 (11), processes that reloaded an earlier one's kernels 0.863
# (10; docs/benchmarks.md, "Session 30"). CACHES lists one word a process, in order: "new" compiles
# in a fresh empty cache (~230 s), "reuse" reloads the previous process's cache (~150 s). The meta
# records which (inductor_cache) and the code digest. Results are packed after each process, so a
# call cut off keeps the finished ones. The default fits one 600 s call on a warm machine.
# RES=1024 re-checks 1024 px with today's code (last measured at session 20's: radius 1 0.966, with
# plan reuse 1.07); it times both configurations there (337 s in session 31: CACHES=new UNET_LIMIT=440 alone).
# UNET_LIMIT (default 340 s) caps a process: in session 31 a compiling 768 px process took 254 s, and
# one was cut off at the old 280 s (its set-ups took 79 + 71 + 69 s).
# SETTINGS (e.g. "PERSISTENT_GATHER_NORMS=True") passes --kernel-setting to every process: the meta
# records it (kernel_settings), so share_over_processes.py can keep such processes apart.
set -u
for cache in ${CACHES:-new reuse}; do  # refused before any work
  case $cache in new|reuse) ;; *) echo "CACHES: '$cache' is not new or reuse"; exit 2 ;; esac
done
res=${RES:-768}
case $res in
  768) methods=("bigain-merge r=0.7 radius=1 plan-reuse") ;;
  1024) methods=("bigain-merge r=0.7 radius=1" "bigain-merge r=0.7 radius=1 plan-reuse") ;;
  *) echo "RES: '$res' is not 768 or 1024"; exit 2 ;;
esac
. scripts/device/bench_env.sh s30c
p=0
for cache in ${CACHES:-new reuse}; do
  p=$((p + 1))
  # reuse: bench_env.sh (or the previous "new") set the folder, the last process's kernels are in it
  [ "$cache" = new ] && export TORCHINDUCTOR_CACHE_DIR=$(mktemp -d)
  s=$(date +%s)
  out=/tmp/r/sd2-$res-p$p-$cache
  timeout "${UNET_LIMIT:-340}" python3 scripts/bench_unet.py --res "$res" --modes cudagraphs --rounds 2 --loop-calls 50 \
    --methods plain plain-copy "${methods[@]}" ${SETTINGS:+--kernel-setting $SETTINGS} --out "$out" > "$out.log" 2>&1
  echo "p$p ($cache) rc=$? $(( $(date +%s) - s )) s"; grep "set up\|loop" "$out.log" | cut -c1-250 | tail -8
  pack
done
