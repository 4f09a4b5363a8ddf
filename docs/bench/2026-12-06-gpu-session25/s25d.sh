#!/bin/bash
# Session 25 call 4 (what the budget's last ~260 s allow): the unmerge kernel's channel block, 64 vs 128.
set -u
. scripts/device/bench_env.sh s25d
s=$(date +%s)
timeout 100 python3 docs/bench/2026-12-06-gpu-session25/unmerge_block.py > /tmp/r/unmerge_block.log 2>&1
echo "probe rc=$? $(( $(date +%s) - s )) s"; tail -5 /tmp/r/unmerge_block.log
pack
