# Usage: bash scripts/device/run_results.sh MODEL_TAG MODEL LIMIT SECONDS [extra results_table args]
# Runs (or resumes) the results table on the GPU machine; the report comes back as $OUT/$TAG.tgz.
set -u
tag=$1 model=$2 limit=$3 secs=$4; shift 4
export PYTHONPATH=/tmp/site:$PWD BIGAIN_FMNIST_DIR=$PWD/.data TORCH_LOGS=-all PYTHONUNBUFFERED=1
mkdir -p /tmp/res /tmp/eng
[ -d ".device/res/$tag" ] && [ ! -d "/tmp/res/$tag" ] && cp -r ".device/res/$tag" /tmp/res/   # resume after a lost machine
timeout "$secs" python3 scripts/results_table.py --model "$model" --limit "$limit" --device cuda \
  --out "/tmp/res/$tag" --engine-dir "/tmp/eng/$tag" "$@" > "/tmp/res/$tag.log" 2> "/tmp/res/$tag.err"
echo "exit $?"
grep -v -E "Warning|warn|torchvision|^\s*$" "/tmp/res/$tag.err" | tr '\r' '\n' | grep -v -E "it/s\]|eval/s\]|s/it\]|\|.*\|" | tail -15
tail -30 "/tmp/res/$tag.log"
ls "/tmp/res/$tag/report/methods" | wc -l
tar -C /tmp/res -czf "$OUT/$tag.tgz" "$tag" "$tag.log"
