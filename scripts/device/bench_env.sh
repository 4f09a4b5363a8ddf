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
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > /tmp/r/card.txt 2>&1 || true
python3 -c "import torch, triton, diffusers; print(torch.__version__, torch.version.cuda, triton.__version__, diffusers.__version__)" >> /tmp/r/card.txt
pack() { tar -C /tmp -czf "/tmp/$tag.tgz" r && mv "/tmp/$tag.tgz" "$OUT/$tag.tgz"; }
