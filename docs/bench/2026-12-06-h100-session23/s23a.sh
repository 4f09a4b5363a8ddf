#!/bin/bash
# Session 23 call 1: GPU kernel tests on the grouped-merge default (both merge paths).
set -u; mkdir -p /tmp/r
for w in .device/mini/*.whl; do python3 -m zipfile -e $w /tmp/site; done
export PYTHONPATH=/tmp/site:$PWD TORCH_LOGS=-all
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/card.txt 2>&1 || true
python3 -c "import torch,triton,diffusers;print(torch.__version__,torch.version.cuda,triton.__version__,diffusers.__version__)" >> /tmp/r/card.txt
s=$(date +%s)
python3 -m pytest -q -m gpu tests/test_kernels.py > /tmp/r/gpu-tests.log 2>&1
echo "gpu tests rc=$? $(( $(date +%s) - s )) s"; tail -4 /tmp/r/gpu-tests.log
tar -C /tmp -czf $OUT/s23a.tgz r
