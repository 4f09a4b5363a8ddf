#!/bin/bash
# Session 25 call 3: DiT-XL/2 512 px batch 16: the loop-length probe (does a short loop charge the
# merged model's larger host time?), then bench_unet with loops of 50 calls (a sampler's length).
set -u; mkdir -p /tmp/r
for w in .device/mini/*.whl; do python3 -m zipfile -e $w /tmp/site; done
export PYTHONPATH=/tmp/site:$PWD TORCH_LOGS=-all
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/card.txt 2>&1 || true
python3 -c "import torch,triton,diffusers;print(torch.__version__,torch.version.cuda,triton.__version__,diffusers.__version__)" >> /tmp/r/card.txt
pack() { tar -C /tmp -czf /tmp/s25c.tgz r && mv /tmp/s25c.tgz $OUT/s25c.tgz; }
s=$(date +%s)
timeout 270 python3 docs/bench/2026-12-06-gpu-session25/loop_length.py /tmp/r/loop_length_dit.json dit-xl2 512 16 "bigain-merge r=0.7" > /tmp/r/loop_length_dit.log 2>&1
echo "probe rc=$? $(( $(date +%s) - s )) s"; grep -E "calls:|host per" /tmp/r/loop_length_dit.log; pack
s=$(date +%s)
timeout 270 python3 scripts/bench_unet.py --model dit-xl2 --res 512 --batch 16 --modes cudagraphs --rounds 3 --eager-only \
  --loop-calls 50 --methods plain "bigain-merge r=0.7" --out /tmp/r/dit-l50 > /tmp/r/dit-l50.log 2>&1
echo "bench rc=$? $(( $(date +%s) - s )) s"; tail -4 /tmp/r/dit-l50.log
pack
