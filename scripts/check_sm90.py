"""Compile the merge path's Triton kernels for a CUDA GPU on a machine without one.

    python scripts/check_sm90.py                 # sm_90 (H100/H200), every shape below
    python scripts/check_sm90.py --arch 100      # another compute capability

The launchers in ``bigain_export.kernels.launch`` run on CPU tensors with their kernels replaced
by recorders, so every launch they would make at a shape (arguments, constexprs, warps, stages)
is captured from the code itself; each one is then compiled by Triton for the target with its own
``ptxas`` and its resources read back with ``cuobjdump``: registers, stack (spills) and shared
memory per kernel. Exit status 1 when a kernel does not compile, or when one named in
``MUST_NOT_SPILL`` spills at a shape. GPU time is scarce; a compile error or a spill found here
costs none of it (the register spill of the nested similarity kernel was found this way).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bigain_export.kernels import launch  # noqa: E402

# name: (batch, grid side, channels, dtype)
SHAPES = {
    "sd2-1024": (2, 128, 320, torch.bfloat16),
    "sd2-768-fp16": (2, 96, 320, torch.float16),
    "dit-xl2-512": (16, 32, 1152, torch.bfloat16),
    "builtin-unet": (250, 32, 64, torch.float16),
    "builtin-dit": (250, 16, 128, torch.float16),
    "float32": (2, 31, 96, torch.float32),
}
# Spills seen and left (2026-12-02, Triton 3.6 and 3.9): the nested similarity kernel (255
# registers + 96 bytes: what the resident one replaces where it applies), small_select_kernel
# (8 bytes), and at 64 channels gather_rows_kernel (8) and kv_pool_kernel (80).
MUST_NOT_SPILL = ("best_anchor_resident_kernel", "laplacian_score_kernel", "unit_rows_kernel", "merge_kernel",
                  "finish_merge_kernel", "grouped_merge_kernel")
TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int32: "i32",
                torch.int64: "i64"}
LAUNCH_OPTIONS = ("num_warps", "num_stages")


class _Recorder:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args, **kwargs)`` is recorded."""

    def __init__(self, fn, calls: list):
        self.fn, self.calls = fn, calls

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((self.fn, args, kwargs))


def capture_launches(batch: int, side: int, channels: int, dtype: torch.dtype, ratio: float = 0.7) -> list:
    """Every kernel launch of plan, merge, unmerge and KV pooling at this shape (CPU tensors)."""
    from bigain_export.config import BiGainConfig

    kernels = launch._triton()
    if kernels is None:
        raise SystemExit("Triton is not installed: pip install -e '.[dev]'")
    calls: list = []
    names = [name for name in dir(kernels) if name.endswith("_kernel")]
    saved = {name: getattr(kernels, name) for name in names}
    saved_options = launch._gpu_options
    try:
        for name in names:
            setattr(kernels, name, _Recorder(saved[name], calls))
        launch._gpu_options = lambda device, **options: options
        n = side * side
        r = BiGainConfig(ratio=ratio).merged_count(n, side, side)
        x = torch.zeros(batch, n, channels, dtype=dtype)
        slot = torch.zeros(batch, n, dtype=torch.int64)
        num_dst = (side // 2) ** 2
        launch.merge_plan(x, None, side, side, r)  # the select path this size takes
        # and both large-size selections, whichever the bound picks here: the one program (eager,
        # up to ONE_PROGRAM_SELECT sources) and the radix select (above it, and in CUDA graphs)
        one_program = launch.ONE_PROGRAM_SELECT
        try:
            for bound in (1 << 30, 0):
                launch.ONE_PROGRAM_SELECT = bound
                launch.merge_plan(x, None, side, side, r)
        finally:
            launch.ONE_PROGRAM_SELECT = one_program
        launch.merge_plan(x, torch.zeros(1, side // 2, side // 2, dtype=torch.long), side, side, r)  # ToMe offsets
        launch.merge_plan(x, None, side, side, r, match_radius=1)  # the similarity kernel's local form (R=1)
        # gated_merge's plan with groups (the select counts them); in the radix select the
        # one-split local form counts the first digit in the similarity kernel; 8- and 11-bit digits
        launch.merge_plan(x, None, side, side, r, match_radius=1, groups=True)
        bits = launch.RADIX_BITS
        try:
            launch.ONE_PROGRAM_SELECT = 0
            for launch.RADIX_BITS in launch.RADIX_BITS_ALLOWED:
                launch.merge_plan(x, None, side, side, r, match_radius=1, groups=True)
        finally:
            launch.ONE_PROGRAM_SELECT, launch.RADIX_BITS = one_program, bits
        launch.atomic_merge(x, slot, n - r, num_dst)  # MERGE_PATH="atomic"
        members, starts = launch.merge_groups(slot, n - r, num_dst)  # the default merge, and a reused plan's
        launch.grouped_merge(x, members, starts, n - r, num_dst)
        launch.unmerge(x[:, : n - r], slot)
        launch.kv_pool(x, torch.ones(1), side, side, 2)
    finally:
        for name, fn in saved.items():
            setattr(kernels, name, fn)
        launch._gpu_options = saved_options
    return calls


def _signature(fn, args, kwargs) -> tuple[dict, dict, dict]:
    values = dict(zip(fn.arg_names, args))
    values.update({key: value for key, value in kwargs.items() if key not in LAUNCH_OPTIONS})
    signature, constexprs = {}, {}
    for index, name in enumerate(fn.arg_names):
        value = values[name]
        if fn.params[index].is_constexpr:
            signature[name], constexprs[name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[name] = "*" + TRITON_TYPES[value.dtype]
        elif isinstance(value, bool):
            signature[name] = "i1"
        elif isinstance(value, int):
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
        else:
            signature[name] = "fp32"
    options = {key: kwargs[key] for key in LAUNCH_OPTIONS if key in kwargs}
    return signature, constexprs, options


def compile_launch(fn, args, kwargs, arch: int) -> dict:
    """Compile one captured launch for ``cuda:arch``: registers, stack bytes, shared bytes."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, constexprs, options = _signature(fn, args, kwargs)
    compiled = triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", arch, 32),
                              options=options or None)
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        usage = subprocess.run([str(cuobjdump), "--dump-resource-usage", str(cubin)], capture_output=True,
                               text=True, check=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+)", usage)
    return dict(kernel=fn.__name__, registers=int(found[1]), stack=int(found[2]), shared=compiled.metadata.shared,
                constexprs=constexprs, options=options)


def check(shapes: list[str], arch: int, only: tuple[str, ...] = ()) -> list[dict]:
    """One row per distinct launch of the shapes (``only``: these kernels alone)."""
    rows, seen = [], set()
    for shape in shapes:
        for fn, args, kwargs in capture_launches(*SHAPES[shape]):
            if only and fn.__name__ not in only:
                continue
            signature, constexprs, options = _signature(fn, args, kwargs)
            key = (fn.__name__, tuple(sorted(signature.items())), tuple(sorted(constexprs.items())),
                   tuple(sorted(options.items())))
            if key in seen:
                continue
            seen.add(key)
            try:
                row = compile_launch(fn, args, kwargs, arch)
            except Exception as exc:  # noqa: BLE001 - every failure is reported, then the exit status says so
                row = dict(kernel=fn.__name__, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                           constexprs=constexprs, options=options)
            rows.append(dict(shape=shape, **row))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90 = sm_90)")
    args = parser.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("unset TRITON_INTERPRET: the interpreter compiles nothing")
    rows = check(args.shapes, args.arch)
    failed = False
    print(f"| shape | kernel | registers | stack (spill) bytes | shared bytes | constexprs, options |\n|---|---|---:|---:|---:|---|")
    for row in rows:
        if "error" in row:
            failed = True
            print(f"| {row['shape']} | {row['kernel']} | FAILED: {row['error']} | | | {row['constexprs']} {row['options']} |")
            continue
        bad = row["kernel"] in MUST_NOT_SPILL and row["stack"] > 0
        failed |= bad
        print(f"| {row['shape']} | {row['kernel']} | {row['registers']} | {row['stack']}{' SPILLS' if bad else ''} "
              f"| {row['shared']} | {row['constexprs']} {row['options']} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
