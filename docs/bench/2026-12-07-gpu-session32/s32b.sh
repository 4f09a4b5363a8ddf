#!/bin/bash
# Session 32's plan, call 2 (after s32a.sh): where the rule of kernels/inductor_choices.py moves the
# time. Profiles plain, the merged model and the merged model under PERSISTENT_GATHER_NORMS=True in
# one process (768 px, CUDA graphs, 50-call loops, traces), then splits each merged trace against
# plain with kernel_choices.py: the norm after the unmerge should turn from the looped
# triton_red_..._gather_native_layer_norm (~24.9 us a launch on an H100) into a triton_per_ kernel
# near plain's 11.3 us. ~300 s on a warm machine.
set -u
. scripts/device/bench_env.sh s32b
m="bigain-merge r=0.7 radius=1 plan-reuse"
s=$(date +%s)
timeout "${PROFILE_LIMIT:-330}" python3 scripts/profile_unet.py --res 768 --mode cudagraphs --loop-calls 50 --trace \
  --methods plain "$m" "$m @PERSISTENT_GATHER_NORMS=True" --out /tmp/r/prof > /tmp/r/prof.log 2>&1
echo "profile rc=$? $(( $(date +%s) - s )) s"; grep "^== \|idle in a loop\|PERSISTENT" /tmp/r/prof.log | cut -c1-200
pack
for t in /tmp/r/prof/trace_*.json.gz; do
  case $t in *trace_plain.json.gz) continue ;; esac
  python3 scripts/kernel_choices.py /tmp/r/prof/trace_plain.json.gz "$t" --top 20 \
    --out "/tmp/r/$(basename "$t" .json.gz).choices.md" | sed -n 1,3p
done
ls /tmp/r/prof
pack
