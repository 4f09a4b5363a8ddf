#!/bin/bash
# Session 22 call 2: DiT-XL/2 MERGE_PATH=groups A/B, then a fourth SD2 768 px process.
set -u; mkdir -p /tmp/r
for w in .device/mini/*.whl; do python3 -m zipfile -e $w /tmp/site; done
export PYTHONPATH=/tmp/site:$PWD TORCH_LOGS=-all
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/card.txt 2>&1 || true
pack() { tar -C /tmp -czf /tmp/s22b.tgz r && mv /tmp/s22b.tgz $OUT/s22b.tgz; }
s=$(date +%s)
timeout 220 python3 scripts/bench_unet.py --model dit-xl2 --res 512 --batch 16 --modes cudagraphs --rounds 3 \
  --eager-only --methods plain "bigain-merge r=0.7" --variant MERGE_PATH=groups --out /tmp/r/dit-groups > /tmp/r/dit-groups.log 2>&1
echo "dit rc=$? $(( $(date +%s) - s )) s"; tail -6 /tmp/r/dit-groups.log; pack
s=$(date +%s)
python3 scripts/bench_unet.py --res 768 --modes cudagraphs --rounds 3 \
  --methods plain "bigain-merge r=0.7 radius=1 plan-reuse" --out /tmp/r/sd2-768-p4 > /tmp/r/sd2-768-p4.log 2>&1
echo "process 4 rc=$? $(( $(date +%s) - s )) s"; tail -4 /tmp/r/sd2-768-p4.log; pack
