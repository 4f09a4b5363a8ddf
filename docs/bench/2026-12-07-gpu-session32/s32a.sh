#!/bin/bash
# Session 32, call 1: does the Inductor rule of kernels/inductor_choices.py (a norm over the
# unmerge's gathered rows made persistent) pay at SD2 768 px? First its tests on this machine's torch
# (2.11): the CPU code-generation ones, and the GPU one (a 128-channel UNet compiled with and
# without the rule: persistent norm, same output); then one bench_unet process compiling
# in an empty cache: plain, plain-copy, merge 0.7 + radius 1 + plan reuse, and the same under
# --variant PERSISTENT_GATHER_NORMS=True, 4 rounds of 50-call loops (rounds are cheap beside compiles).
set -u
. scripts/device/bench_env.sh s32a
python3 -c "import torch._inductor.config as c; print('inductor_choices_class' in dir(c))" > /tmp/r/torch-seam.txt 2>&1
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_inductor_choices.py > /tmp/r/rule-tests.log 2>&1
echo "rule tests rc=$?"; tail -3 /tmp/r/rule-tests.log; cat /tmp/r/torch-seam.txt
pack
out=/tmp/r/sd2-768-pgn
s=$(date +%s)
timeout "${UNET_LIMIT:-440}" python3 scripts/bench_unet.py --res 768 --modes cudagraphs --rounds 4 --loop-calls 50 \
  --methods plain plain-copy "bigain-merge r=0.7 radius=1 plan-reuse" --variant PERSISTENT_GATHER_NORMS=True \
  --out "$out" > "$out.log" 2>&1
echo "bench rc=$? $(( $(date +%s) - s )) s"; grep "set up\|PERSISTENT\|loop\|Error" "$out.log" | cut -c1-250 | tail -14
pack
