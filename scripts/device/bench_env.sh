# Source from a benchmark call's script on the GPU machine: bash -c '. scripts/device/bench_env.sh TAG; ...'
#
# Sets up what the benchmarks need there (diffusers and tomesd from the wheels carried in
# .device/mini, unpacked into /tmp/site; docs/development.md, "The GPU machine"), records the card
# and versions in /tmp/r/card.txt, and defines `pack`, which tars /tmp/r into $OUT/TAG.tgz: call
# it after each step, so a call cut off by its limit still brings back every finished step.
tag=${1:?usage: . scripts/device/bench_env.sh TAG}
mkdir -p /tmp/r
for wheel in .device/mini/*.whl; do python3 -m zipfile -e "$wheel" /tmp/site; done
export PYTHONPATH=/tmp/site:$PWD TORCH_LOGS=-all
# each process compiles anew: on a machine kept warm between calls, Inductor's cache would hand the
# next process the previous one's kernels and their benchmarked picks (session 28's p2), so the
# processes a median is taken over would not be independent draws. Set it to share a cache.
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$(mktemp -d)}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/card.txt 2>&1 || true
echo "inductor cache $TORCHINDUCTOR_CACHE_DIR" >> /tmp/r/card.txt
python3 -c "import torch, triton, diffusers; print(torch.__version__, torch.version.cuda, triton.__version__, diffusers.__version__)" >> /tmp/r/card.txt
pack() { tar -C /tmp -czf "/tmp/$tag.tgz" r && mv "/tmp/$tag.tgz" "$OUT/$tag.tgz"; }
