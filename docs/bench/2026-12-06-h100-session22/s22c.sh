#!/bin/bash
# Session 22 call 3: DiT-XL/2 per-block merge, session 20's 07478c2 vs HEAD, same machine.
set -u; mkdir -p /tmp/r
for w in .device/mini/*.whl; do python3 -m zipfile -e $w /tmp/site; done
export TORCH_LOGS=-all
pack() { tar -C /tmp -czf /tmp/s22c.tgz r && mv /tmp/s22c.tgz $OUT/s22c.tgz; }
s=$(date +%s)
(cd .device/before && PYTHONPATH=/tmp/site:$PWD timeout 170 python3 scripts/bench_unet.py --model dit-xl2 --res 512 --batch 16 --modes cudagraphs --rounds 3 --eager-only --methods plain "bigain-merge r=0.7" --out /tmp/r/dit-07478c2 > /tmp/r/dit-07478c2.log 2>&1)
echo "before rc=$? $(( $(date +%s) - s )) s"; tail -3 /tmp/r/dit-07478c2.log; pack
s=$(date +%s)
PYTHONPATH=/tmp/site:$PWD timeout 170 python3 scripts/bench_unet.py --model dit-xl2 --res 512 --batch 16 --modes cudagraphs --rounds 3 --eager-only --methods plain "bigain-merge r=0.7" --out /tmp/r/dit-head > /tmp/r/dit-head.log 2>&1
echo "head rc=$? $(( $(date +%s) - s )) s"; tail -3 /tmp/r/dit-head.log; pack
