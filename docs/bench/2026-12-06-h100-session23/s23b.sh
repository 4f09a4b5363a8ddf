#!/bin/bash
# Session 23 call 2: the plan's launch settings as CUDA graphs (bench_kernels --launches-only), GPU kernel
# tests with the fused plan, then SD2 768 px A/B (PLAN_FUSION) in two bench_unet processes.
set -u; mkdir -p /tmp/r
for w in .device/mini/*.whl; do python3 -m zipfile -e $w /tmp/site; done
export PYTHONPATH=/tmp/site:$PWD TORCH_LOGS=-all
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/card.txt 2>&1 || true
pack() { tar -C /tmp -czf /tmp/s23b.tgz r && mv /tmp/s23b.tgz $OUT/s23b.tgz; }
s=$(date +%s)
timeout 150 python3 scripts/bench_kernels.py --shapes sd2-768 sd2-1024 dit-xl2-512 --launches-only --out /tmp/r/kernels > /tmp/r/kernels.log 2>&1
echo "kernels rc=$? $(( $(date +%s) - s )) s"; tail -40 /tmp/r/kernels.log; pack
s=$(date +%s)
timeout 200 python3 -m pytest -q -m gpu tests/test_kernels.py > /tmp/r/gpu-tests.log 2>&1
echo "gpu tests rc=$? $(( $(date +%s) - s )) s"; tail -3 /tmp/r/gpu-tests.log; grep -E "^FAILED|Error" /tmp/r/gpu-tests.log | head -5; pack
for i in 1 2; do
  s=$(date +%s)
  python3 scripts/bench_unet.py --res 768 --modes cudagraphs --rounds 3 \
    --methods plain "bigain-merge r=0.7 radius=1 plan-reuse" --variant PLAN_FUSION=False --out /tmp/r/sd2-768-p$i > /tmp/r/sd2-768-p$i.log 2>&1
  echo "process $i rc=$? $(( $(date +%s) - s )) s"; tail -4 /tmp/r/sd2-768-p$i.log
  pack
done
