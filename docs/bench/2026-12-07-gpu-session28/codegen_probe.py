"""Which Triton kernels Inductor generates for a patched SD2-like level-0 UNet, without a GPU:
cpu_backend='triton', and kernel compiles intercepted so codegen completes."""
import sys, re
sys.path.insert(0, "/work/main/scripts")
import torch
import torch._inductor.config as cfg
cfg.cpu_backend = "triton"
import torch._inductor.async_compile as ac
import torch.utils._triton as ut
import torch._inductor.codegen.triton as ct
SRC = {}
class Dummy:
    def __getattr__(self, n): return lambda *a, **k: None
def fake_triton(self, kernel_name, source_code, *a, **k):
    SRC[kernel_name] = source_code
    return Dummy()
ac.AsyncCompile.triton = fake_triton
ut.triton_hash_with_backend = lambda: "x"
ct.triton_hash_with_backend = lambda: "x"
import torch._inductor.choices as chm
_orig = chm.InductorChoices.should_use_persistent_reduction
def spy(features, cooperative_reduction):
    r = _orig(features, cooperative_reduction)
    names = [n.get_name() for n in features.scheduler_nodes()] if hasattr(features, "scheduler_nodes") else []
    if not r: print("NOT persistent:", features.reduction_numel, features.get_reduction_hint(), "coop", cooperative_reduction, names[:6])
    return r
chm.InductorChoices.should_use_persistent_reduction = staticmethod(spy)
import torch._inductor.codegen.simd as simd
_init = simd.SIMDKernel.__init__
def init_spy(self, *a, **k):
    _init(self, *a, **k)
    if self.inside_reduction and not self.persistent_reduction:
        import traceback
        print("LOOPED kernel: override", k.get("override_persistent_reduction"), "numel", self.features.reduction_numel, "hint", self.features.get_reduction_hint(), "mix", getattr(self, "mix_order_reduction", None))
        pass
simd.SIMDKernel.__init__ = init_spy
import os
if os.environ.get("PERSISTENT_GATHER_NORMS") == "1":  # session 32: the patch holds kernels/inductor_choices' rule
    from bigain_export.kernels import launch as _launch
    _launch.PERSISTENT_GATHER_NORMS = True
FORM = os.environ.get("UNMERGE_FORM", "gather")  # gather (the library's), index, select, or op (the custom op)
if FORM == "op":
    from bigain_export.kernels import launch
    launch.UNMERGE_IN_GRAPH = False
import bigain_export.ops.reference as refmod
if FORM == "index":
    refmod.unmerge = lambda y, slot: y[torch.arange(y.shape[0], device=y.device)[:, None], slot]
elif FORM == "force":  # the gather, then realised with its own strides (one pointwise kernel writes it)
    import torch._inductor.inductor_prims  # noqa: F401  (registers prims.inductor_force_stride_order)
    _gather = refmod.unmerge
    refmod.unmerge = lambda y, slot: torch.ops.prims.inductor_force_stride_order(_gather(y, slot), _gather(y, slot).stride())
elif FORM == "select":
    refmod.unmerge = lambda y, slot: torch.index_select(y.reshape(-1, y.shape[-1]), 0, (slot + torch.arange(y.shape[0], device=y.device)[:, None] * y.shape[1]).reshape(-1)).reshape(slot.shape[0], slot.shape[1], y.shape[-1])
from bench_unet import METHODS, patch, SD2_BASE_UNET
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from bench_unet import use_sdpa
method = sys.argv[1] if len(sys.argv) > 1 else "bigain-merge r=0.7 radius=1 plan-reuse"
cfgd = dict(SD2_BASE_UNET, layers_per_block=1, block_out_channels=(320, 640), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=(5, 10))
torch.manual_seed(0)
model = UNet2DConditionModel(**cfgd).to(torch.bfloat16).eval()
use_sdpa(model, AttnProcessor2_0)
patch(model, None if method == "plain" else METHODS[method])
x = torch.randn(2, 4, 96, 96, dtype=torch.bfloat16); t = torch.full((2,), 500); c = torch.randn(2, 77, 1024, dtype=torch.bfloat16)
with torch.inference_mode():
    try:
        torch.compile(model)(x, t, c)
    except Exception as e:
        print("after codegen:", type(e).__name__, str(e)[:120])
pat = sys.argv[2] if len(sys.argv) > 2 else "layer_norm"
for name, src in SRC.items():
    if re.search(pat, name):
        heur = re.search(r"@triton_heuristics\.(\w+)", src).group(1)
        hint = re.search(r"reduction_hint=ReductionHint\.(\w+)", src)
        print(name, heur, hint.group(1) if hint else "-")
        if len(sys.argv) > 3 and sys.argv[3] in name: print(src)
