"""kernels/inductor_choices.py: which Triton kernel Inductor generates for a norm over gathered rows.

Inductor's Triton code generation runs on the CPU here (``cpu_backend="triton"``), with the kernel
compiles intercepted: the tests read the generated kernels' names (``triton_per_*``: persistent,
``triton_red_*``: looped), not their output. The GPU benchmark times them (docs/benchmarks.md).
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("triton", reason="Triton is not installed (pip install -e '.[dev]' installs it)")

from torch._inductor import async_compile, config  # noqa: E402
from torch._inductor.choices import InductorChoices  # noqa: E402
from torch._inductor.virtualized import V  # noqa: E402

from bigain_export.kernels import inductor_choices  # noqa: E402
from bigain_export.ops import reference  # noqa: E402


class _Inert:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def generated_kernels(fn, *inputs) -> list[str]:
    """Names of the Triton kernels Inductor generates for ``fn`` (nothing is compiled or run)."""
    names = []

    def intercept(self, kernel_name, source_code, *args, **kwargs):
        names.append(kernel_name)
        return _Inert()

    torch._dynamo.reset()
    patches = dict(cpu_backend="triton", fx_graph_cache=False)
    with config.patch(patches), pytest.MonkeyPatch.context() as mp:
        mp.setattr(async_compile.AsyncCompile, "triton", intercept)
        mp.setattr("torch.utils._triton.triton_hash_with_backend", lambda: "cpu-probe", raising=False)
        mp.setattr("torch._inductor.codegen.triton.triton_hash_with_backend", lambda: "cpu-probe", raising=False)
        try:
            torch.compile(fn, fullgraph=True)(*inputs)
        except Exception:  # the inert kernels return nothing to run: code generation is what counts
            pass
    torch._dynamo.reset()
    return names


def norm_of_unmerged(x, y, slot, weight, bias):
    """The SD2 block's pattern: residual + unmerged attention output, then the next LayerNorm."""
    h = x + reference.unmerge(y, slot)
    return torch.nn.functional.layer_norm(h, (h.shape[-1],), weight, bias)


def rows_inductor_leaves_default(device: str) -> int:
    """Inductor's IR gives a reduction over at least 64 rows per multiprocessor (a CPU's cores,
    a GPU's SMs) the hint DEFAULT without looking at its reads (``Reduction.num_splits``); with fewer,
    a gathered norm's reads already make it INNER. At SD2 768 px the level-0 norm has 18432 rows,
    above an H100's 8448; the tests use as many rows as the device needs (on the GPU machine's 16
    cores 2 x 96 rows were too few: session 33)."""
    from torch._inductor.runtime.hints import DeviceProperties

    return 64 * DeviceProperties.create(torch.device(device)).multi_processor_count


def _inputs(channels: int):
    g = torch.Generator().manual_seed(0)
    tokens = rows_inductor_leaves_default("cpu") // 2 + 8  # per batch item, 2 items
    x = torch.randn(2, tokens, channels, generator=g)
    y = torch.randn(2, 40, channels, generator=g)
    slot = torch.randint(0, 40, (2, tokens), generator=g)
    return x, y, slot, torch.randn(channels, generator=g), torch.randn(channels, generator=g)


def _norm_kernels(names: list[str]) -> list[str]:
    return [name for name in names if "layer_norm" in name]


def test_inductor_alone_loops_the_norm_over_gathered_rows():
    """The cost the rule removes: without it the norm over 320 gathered channels is looped (if a
    torch release fixes its heuristic, this fails and the rule can go)."""
    kernels = _norm_kernels(generated_kernels(norm_of_unmerged, *_inputs(320)))
    assert kernels and all(name.startswith("triton_red_") for name in kernels), kernels


def test_the_rule_makes_that_norm_persistent_and_is_removed_after():
    before = inductor_choices.decisions_changed
    with inductor_choices.installed() as took:
        assert took and isinstance(V.choices, inductor_choices.GatheredRowChoices)
        kernels = _norm_kernels(generated_kernels(norm_of_unmerged, *_inputs(320)))
    assert kernels and all(name.startswith("triton_per_") for name in kernels), kernels
    assert inductor_choices.decisions_changed > before
    assert type(V.choices) is InductorChoices
    assert getattr(config, "inductor_choices_class", None) is None


def test_the_rule_leaves_rows_over_inductors_inner_limit_looped():
    """1152 channels (DiT-XL/2) are looped in plain models too: the rule gives gathered rows the
    INNER limit, no more."""
    with inductor_choices.installed():
        kernels = _norm_kernels(generated_kernels(norm_of_unmerged, *_inputs(1152)))
    assert kernels and all(name.startswith("triton_red_") for name in kernels), kernels


def test_the_rule_changes_no_kernel_without_a_gather():
    def plain_norm(x, y, slot, weight, bias):
        return torch.nn.functional.layer_norm(x + x.sin(), (x.shape[-1],), weight, bias)

    inputs = _inputs(320)
    alone = generated_kernels(plain_norm, *inputs)
    before = inductor_choices.decisions_changed
    with inductor_choices.installed():
        ruled = generated_kernels(plain_norm, *inputs)
    assert ruled == alone and inductor_choices.decisions_changed == before


class Theirs(InductorChoices):
    """Another package's Inductor choices."""

    def uuid(self):
        return "theirs"


@pytest.fixture
def theirs_in_place():
    saved = V.choices
    V.set_choices_handler(Theirs())
    yield
    V.set_choices_handler(saved)


def test_another_packages_choices_are_left_in_place(theirs_in_place):
    with inductor_choices.installed() as took:
        assert not took and type(V.choices) is Theirs
    assert inductor_choices.hold() is None and type(V.choices) is Theirs


def test_a_patch_asked_for_the_rule_says_so_where_another_packages_choices_stay(theirs_in_place, monkeypatch):
    from bigain_export import BiGainConfig
    from bigain_export.kernels import launch
    from bigain_export.patch import apply_bigain, remove_bigain
    from tiny import tiny_unet

    monkeypatch.setattr(launch, "PERSISTENT_GATHER_NORMS", True)
    model = tiny_unet()
    with pytest.warns(UserWarning, match="another package's Inductor choices are in place .Theirs."):
        apply_bigain(model, BiGainConfig(ratio=0.5))
    assert type(V.choices) is Theirs
    remove_bigain(model)
    assert type(V.choices) is Theirs


def test_a_merging_patch_holds_the_rule_while_patched_when_asked(monkeypatch):
    """launch.PERSISTENT_GATHER_NORMS: apply_bigain holds the rule, so a user's own torch.compile of
    the patched model gets it; the last remove_bigain restores Inductor's own choices, exactly."""
    import copy

    from bigain_export import BiGainConfig
    from bigain_export.kernels import launch
    from bigain_export.patch import apply_bigain, remove_bigain
    from tiny import tiny_unet

    own = V.choices
    first, second = tiny_unet(), tiny_unet(seed=1)
    apply_bigain(first, BiGainConfig(ratio=0.5))  # the setting off (the default): nothing held
    assert V.choices is own
    monkeypatch.setattr(launch, "PERSISTENT_GATHER_NORMS", True)
    apply_bigain(first, BiGainConfig(ratio=0.5))
    apply_bigain(second, BiGainConfig(ratio=0.5))
    assert isinstance(V.choices, inductor_choices.GatheredRowChoices)
    assert getattr(config, "inductor_choices_class", inductor_choices.GatheredRowChoices) is inductor_choices.GatheredRowChoices
    remove_bigain(copy.deepcopy(first))  # a copy's patch held nothing and lets go of nothing
    remove_bigain(first)
    assert isinstance(V.choices, inductor_choices.GatheredRowChoices)  # second still holds it
    remove_bigain(second)
    assert V.choices is own and getattr(config, "inductor_choices_class", None) is None
    apply_bigain(first, BiGainConfig(ratio=0.0, downsample=2))  # KV pooling alone has no unmerge: nothing held
    assert V.choices is own
    remove_bigain(first)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run with -m gpu on the GPU machine)")
def test_gpu_compiled_unet_with_the_rule_agrees_and_gets_the_persistent_norm(monkeypatch):
    """On the GPU's own torch: a UNet with 128 channels at its first level (above Inductor's 64 for
    a DEFAULT reduction), merged with a reused plan and compiled through the product's path
    (the setting on before apply_bigain), gets the persistent norm and agrees with the compile
    without the rule to bf16 rounding. Each compile in an empty Inductor cache."""
    from diffusers import UNet2DConditionModel
    from torch._inductor import utils
    from torch._inductor.utils import run_and_get_code

    from bigain_export import BiGainConfig
    from bigain_export.kernels import launch
    from bigain_export.patch import apply_bigain, remove_bigain
    from tiny import unet_inputs

    side = 8 * math.ceil(math.sqrt(rows_inductor_leaves_default("cuda") / 2) / 8)  # 72 on an H100
    torch.manual_seed(0)
    model = UNet2DConditionModel(
        sample_size=side, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(128, 128),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    ).eval().to("cuda", torch.bfloat16)
    sample, t, context = (a.to("cuda") for a in unet_inputs(size=side))
    config = BiGainConfig.preset("bigain-merge", ratio=0.7, plan_reuse=True, match_radius=1)
    outputs, sources = [], []
    for rule in (False, True):
        monkeypatch.setattr(launch, "PERSISTENT_GATHER_NORMS", rule)
        apply_bigain(model, config)
        torch._dynamo.reset()
        fresh_cache = getattr(utils, "fresh_cache", None) or utils.fresh_inductor_cache  # the older name
        with fresh_cache(), torch.no_grad():
            out, code = run_and_get_code(torch.compile(model, fullgraph=True), sample.bfloat16(), t, context.bfloat16())
        remove_bigain(model)
        outputs.append(out.sample.float())
        sources.append("\n".join(code))
    norms = [[line for line in source.split() if "gather" in line and "layer_norm" in line and line.startswith("triton_")]
             for source in sources]
    assert any(name.startswith("triton_red_") for name in norms[0]), norms[0]
    assert norms[1] and not any(name.startswith("triton_red_") for name in norms[1]), norms[1]
    default, ruled = outputs
    assert (ruled - default).abs().mean() <= 1e-2 * default.abs().mean()
