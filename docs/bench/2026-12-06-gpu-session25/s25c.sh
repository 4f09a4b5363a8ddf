#!/bin/bash
# Session 25 call 3: DiT-XL/2 512 px batch 16, per-block plan, with loops of 50 calls (a sampler's
# length) and a second compiled copy of plain in the same rounds (the floor between two compiles).
set -u; mkdir -p /tmp/r
for w in .device/mini/*.whl; do python3 -m zipfile -e $w /tmp/site; done
export PYTHONPATH=/tmp/site:$PWD TORCH_LOGS=-all
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/card.txt 2>&1 || true
python3 -c "import torch,triton,diffusers;print(torch.__version__,torch.version.cuda,triton.__version__,diffusers.__version__)" >> /tmp/r/card.txt
pack() { tar -C /tmp -czf /tmp/s25c.tgz r && mv /tmp/s25c.tgz $OUT/s25c.tgz; }
s=$(date +%s)
timeout ${DIT_LIMIT:-340} python3 scripts/bench_unet.py --model dit-xl2 --res 512 --batch 16 --modes cudagraphs --rounds 3 \
  --eager-only --loop-calls 50 --methods plain plain-copy "bigain-merge r=0.7" --out /tmp/r/dit-l50 > /tmp/r/dit-l50.log 2>&1
echo "bench rc=$? $(( $(date +%s) - s )) s"; grep "set up\|loop" /tmp/r/dit-l50.log | cut -c1-250 | tail -8
pack
