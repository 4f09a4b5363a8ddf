#!/bin/bash
# Session 23 call 2: GPU kernel tests with the fused plan (plan, merge and compile tests), the plan's
# launch settings as CUDA graphs (bench_kernels --launches-only), then SD2 768 px A/B (PLAN_FUSION)
# in one bench_unet process.
set -u; mkdir -p /tmp/r
for w in .device/mini/*.whl; do python3 -m zipfile -e $w /tmp/site; done
export PYTHONPATH=/tmp/site:$PWD TORCH_LOGS=-all
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/card.txt 2>&1 || true
python3 -c "import torch,triton,diffusers;print(torch.__version__,torch.version.cuda,triton.__version__,diffusers.__version__)" >> /tmp/r/card.txt
pack() { tar -C /tmp -czf /tmp/s23b.tgz r && mv /tmp/s23b.tgz $OUT/s23b.tgz; }
s=$(date +%s)
timeout 170 python3 -m pytest -q -m gpu tests/test_kernels.py -k "plan or ties or local or merge_unmerge or compile" > /tmp/r/gpu-tests.log 2>&1
echo "gpu tests rc=$? $(( $(date +%s) - s )) s"; tail -2 /tmp/r/gpu-tests.log; grep -E "^FAILED|Error" /tmp/r/gpu-tests.log | head -5; pack
s=$(date +%s)
timeout 120 python3 scripts/bench_kernels.py --shapes sd2-768 dit-xl2-512 sd2-1024 --launches-only --out /tmp/r/kernels > /tmp/r/kernels.log 2>&1
echo "kernels rc=$? $(( $(date +%s) - s )) s"; tail -40 /tmp/r/kernels.log; pack
s=$(date +%s)
timeout ${UNET_LIMIT:-250} python3 scripts/bench_unet.py --res 768 --modes cudagraphs --rounds 3 \
  --methods plain "bigain-merge r=0.7 radius=1 plan-reuse" --variant PLAN_FUSION=False --out /tmp/r/sd2-768-p1 > /tmp/r/sd2-768-p1.log 2>&1
echo "process 1 rc=$? $(( $(date +%s) - s )) s"; tail -4 /tmp/r/sd2-768-p1.log
pack
