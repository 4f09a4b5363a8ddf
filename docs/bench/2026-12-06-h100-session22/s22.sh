#!/bin/bash
# Session 22: three independent bench_unet processes at 768 px, then DiT MERGE_PATH A/B.
set -u; mkdir -p /tmp/r
for w in .device/mini/*.whl; do python3 -m zipfile -e $w /tmp/site; done
export PYTHONPATH=/tmp/site:$PWD TORCH_LOGS=-all
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/card.txt 2>&1 || true
python3 -c "import torch,triton,diffusers;print(torch.__version__,torch.version.cuda,triton.__version__,diffusers.__version__)" >> /tmp/r/card.txt
pack() { tar -C /tmp -czf /tmp/s22.tgz r && mv /tmp/s22.tgz $OUT/s22.tgz; }
for i in 1 2 3; do
  s=$(date +%s)
  python3 scripts/bench_unet.py --res 768 --modes cudagraphs --rounds 3 \
    --methods plain "bigain-merge r=0.7 radius=1 plan-reuse" --out /tmp/r/sd2-768-p$i > /tmp/r/sd2-768-p$i.log 2>&1
  echo "process $i rc=$? $(( $(date +%s) - s )) s"; tail -5 /tmp/r/sd2-768-p$i.log
  pack
done
if [ "${DIT:-1}" = 1 ]; then
  s=$(date +%s)
  timeout ${DIT_LIMIT:-150} python3 scripts/bench_unet.py --model dit-xl2 --res 512 --batch 16 --modes cudagraphs --rounds 3 \
    --eager-only --methods plain "bigain-merge r=0.7" --variant MERGE_PATH=groups --out /tmp/r/dit-groups > /tmp/r/dit-groups.log 2>&1
  echo "dit rc=$? $(( $(date +%s) - s )) s"; tail -8 /tmp/r/dit-groups.log
  pack
fi
