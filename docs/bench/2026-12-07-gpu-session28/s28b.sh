#!/bin/bash
# Session 28 call: SD2 768 px with each reduction's configuration picked by Inductor's heuristic
# (TORCHINDUCTOR_FORCE_FILTER_REDUCTION_CONFIGS=1), not benchmarked at its first call, so plain,
# plain-copy and the merged model run the same reduction kernels wherever their graphs agree.
# (TORCHINDUCTOR_DETERMINISTIC=1, tried in s28a.sh, is reset by Dynamo before Inductor compiles.)
set -u
. scripts/device/bench_env.sh s28b
export TORCHINDUCTOR_FORCE_FILTER_REDUCTION_CONFIGS=1
python3 -c "import torch._inductor.config as c; print('force_filter_reduction_configs', c.test_configs.force_filter_reduction_configs)" >> /tmp/r/card.txt
s=$(date +%s)
timeout ${UNET_LIMIT:-300} python3 scripts/bench_unet.py --res 768 --modes cudagraphs --rounds ${ROUNDS:-2} --loop-calls 50 \
  --methods plain plain-copy "bigain-merge r=0.7 radius=1 plan-reuse" --out /tmp/r/filter-768 > /tmp/r/filter-768.log 2>&1
echo "bench rc=$? $(( $(date +%s) - s )) s"; grep "set up\|loop\|inductor" /tmp/r/filter-768.log | cut -c1-250 | tail -8
grep -o '"inductor": {[^}]*}' /tmp/r/filter-768/bench_unet.json; cat /tmp/r/card.txt
pack
