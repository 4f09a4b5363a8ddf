#!/bin/bash
# Next GPU session, after s30c.sh if the split by cache holds: why does plain run faster in a process
# that reloads another's Inductor cache? Profiles plain and the merged model twice in one cache: the
# first process compiles (empty cache), the second reloads its kernels and picks. kernel_choices.py
# --all-kernels then pairs each model's two traces: other grids would mean other picks (the autotune
# cache did not hold), the same grids with other times would mean the kernels ran differently.
# ~250 s on a warm machine.
set -u
. scripts/device/bench_env.sh s30d
m="bigain-merge r=0.7 radius=1 plan-reuse"
for run in new reuse; do
  s=$(date +%s)
  timeout "${PROFILE_LIMIT:-200}" python3 scripts/profile_unet.py --res 768 --mode cudagraphs --loop-calls 50 --trace \
    --methods plain "$m" --out /tmp/r/prof-$run > /tmp/r/prof-$run.log 2>&1
  echo "$run rc=$? $(( $(date +%s) - s )) s"; grep "^== \|idle in a loop" /tmp/r/prof-$run.log | cut -c1-200
  pack
done
for t in /tmp/r/prof-new/trace_*.json.gz; do
  name=$(basename "$t" .json.gz)
  python3 scripts/kernel_choices.py "$t" "/tmp/r/prof-reuse/$name.json.gz" --all-kernels --top 20 \
    --out "/tmp/r/$name.new-vs-reuse.md" | sed -n 1,3p
done
pack
