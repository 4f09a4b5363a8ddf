"""Patching real diffusers models: equivalence at ratio 0, reversibility, block selection,
ToMe parity with tomesd, torch.compile without graph breaks or recompiles."""

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0
from torch._dynamo.testing import CompileCounter

from bigain_export import BiGainConfig, apply_bigain, bigain_patched, remove_bigain
from bigain_export.errors import UnsupportedModelError
from bigain_export.patch import patch_info

from tiny import dit_inputs, tiny_dit, tiny_unet, unet_inputs

ALL_MODES = [
    BiGainConfig.preset("bigain-merge", ratio=0.5),
    BiGainConfig.preset("bigain-merge", ratio=0.7, anchor="released"),
    BiGainConfig.preset("bigain-kv"),
    BiGainConfig.preset("bigain-both", ratio=0.5),
    BiGainConfig.preset("tome", ratio=0.5),
    BiGainConfig.preset("todo"),
]


def run_unet(unet, inputs):
    torch.manual_seed(0)  # ToMe's random anchors draw from the global generator
    with torch.no_grad():
        return unet(*inputs).sample


def run_dit(dit, inputs):
    torch.manual_seed(0)
    with torch.no_grad():
        return dit(**inputs).sample


def test_ratio_zero_matches_unpatched_unet_and_dit():
    unet, dit = tiny_unet(), tiny_dit()
    u_in, d_in = unet_inputs(), dit_inputs()
    u0, d0 = run_unet(unet, u_in), run_dit(dit, d_in)
    with bigain_patched(unet, ratio=0.0):
        torch.testing.assert_close(run_unet(unet, u_in), u0)
    with bigain_patched(dit, ratio=0.0):
        torch.testing.assert_close(run_dit(dit, d_in), d0)


@pytest.mark.parametrize("config", ALL_MODES, ids=lambda c: c.describe())
def test_every_mode_changes_output_and_remove_restores(config):
    unet, dit = tiny_unet(), tiny_dit()
    u_in, d_in = unet_inputs(), dit_inputs()
    u0, d0 = run_unet(unet, u_in), run_dit(dit, d_in)
    for model, run, inputs, ref in ((unet, run_unet, u_in, u0), (dit, run_dit, d_in, d0)):
        apply_bigain(model, config)
        out = run(model, inputs)
        assert out.shape == ref.shape and torch.isfinite(out).all()
        assert not torch.allclose(out, ref, atol=1e-6), "compression had no effect"
        # close to the uncompressed model, not garbage (tiny random models, loose bound)
        assert (out - ref).norm() / ref.norm() < 0.5
        apply_bigain(model, config)  # re-applying replaces, never stacks
        torch.testing.assert_close(run(model, inputs), out)
        remove_bigain(model)
        assert torch.equal(run(model, inputs), ref)
        assert patch_info(model) is None


def test_processors_wrap_sdpa_and_are_restored():
    unet = tiny_unet()
    before = {name: type(p) for name, p in unet.attn_processors.items()}
    assert set(before.values()) == {AttnProcessor2_0}
    apply_bigain(unet, BiGainConfig())
    patched = [p for p in unet.attn_processors.values() if hasattr(p, "inner")]
    assert patched and all(isinstance(p.inner, AttnProcessor2_0) for p in patched)
    remove_bigain(unet)
    assert {name: type(p) for name, p in unet.attn_processors.items()} == before


def test_unet_level_selection():
    unet = tiny_unet()
    apply_bigain(unet, BiGainConfig())
    assert patch_info(unet).target_names == [
        "down_blocks.0.attentions.0.transformer_blocks.0",
        "up_blocks.1.attentions.0.transformer_blocks.0",
        "up_blocks.1.attentions.1.transformer_blocks.0",
    ]
    apply_bigain(unet, BiGainConfig(unet_levels=(1,)))
    names = patch_info(unet).target_names
    assert names[0].startswith("down_blocks.1") and all("down_blocks.0" not in n for n in names)


def test_dit_block_selection_defaults_to_paper_blocks():
    dit = tiny_dit()
    apply_bigain(dit, BiGainConfig())
    expected = [f"transformer_blocks.{i}" for i in (1, 2, 3, 4, 5, 7, 8, 9, 10, 11)]
    assert patch_info(dit).target_names == expected
    shallow = tiny_dit(num_layers=6)
    apply_bigain(shallow, BiGainConfig())
    assert patch_info(shallow).target_names == [f"transformer_blocks.{i}" for i in (1, 2, 3, 4, 5)]


def test_unsupported_inputs_patch_nothing():
    unet, dit = tiny_unet(), tiny_dit(num_layers=6)
    with pytest.raises(UnsupportedModelError, match=r"level\(s\) \[3\].*levels with blocks: \[0, 1\]"):
        apply_bigain(unet, BiGainConfig(unet_levels=(0, 3)))
    assert patch_info(unet) is None and not any(hasattr(p, "inner") for p in unet.attn_processors.values())
    with pytest.raises(UnsupportedModelError, match=r"dit_blocks has \[9\].*6 blocks"):
        apply_bigain(dit, BiGainConfig(dit_blocks=(1, 9)))
    with pytest.raises(UnsupportedModelError, match="found Linear; supported: UNet2DConditionModel"):
        apply_bigain(torch.nn.Linear(2, 2), BiGainConfig())


def test_downsample_must_divide_the_grid():
    dit = tiny_dit(sample_size=12)  # 6x6 tokens: s=4 does not divide
    inputs = dit_inputs(size=12)
    apply_bigain(dit, BiGainConfig.preset("bigain-kv", downsample=4))
    with pytest.raises(ValueError, match=r"downsample=4 does not divide the 6x6 token grid"):
        run_dit(dit, inputs)


def test_pipeline_and_denoiser_like_objects_are_resolved():
    class Pipe:
        def __init__(self):
            self.unet = tiny_unet()
            self.scheduler = type("S", (), {"config": {"num_train_timesteps": 500}})()

    pipe = Pipe()
    model = apply_bigain(pipe, BiGainConfig.preset("bigain-kv"))
    assert model is pipe.unet and patch_info(pipe).state.num_train_timesteps == 500
    remove_bigain(pipe)


def test_scheduled_alpha_follows_the_timestep():
    """With a scheduled alpha the output depends on t through K/V; with ToDo (alpha=1) at t=0
    it equals BiGain's alpha(t=0)=1.2 only if alpha is ignored, so they must differ."""
    dit = tiny_dit()
    inputs = dit_inputs(batch=1)
    inputs["timestep"] = torch.tensor([0])
    with bigain_patched(dit, BiGainConfig.preset("bigain-kv")):
        bigain_t0 = run_dit(dit, inputs)
    with bigain_patched(dit, BiGainConfig.preset("bigain-kv", alpha=1.2)):
        fixed_12 = run_dit(dit, inputs)
    with bigain_patched(dit, BiGainConfig.preset("todo")):
        todo = run_dit(dit, inputs)
    torch.testing.assert_close(bigain_t0, fixed_12)
    assert not torch.allclose(bigain_t0, todo)


def test_tome_fixed_anchor_reproduces_tomesd():
    tomesd = pytest.importorskip("tomesd", reason="tomesd is a dev dependency")
    unet = tiny_unet(sample_size=16)
    inputs = unet_inputs(size=16)
    tomesd.apply_patch(unet, ratio=0.5, max_downsample=1, use_rand=False)
    expected = run_unet(unet, inputs)
    tomesd.remove_patch(unet)
    assert not torch.allclose(expected, run_unet(unet, inputs))  # tomesd really merged
    with bigain_patched(unet, BiGainConfig.preset("tome", ratio=0.5, anchor="fixed")):
        torch.testing.assert_close(run_unet(unet, inputs), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("config", [BiGainConfig.preset("bigain-both", ratio=0.5), BiGainConfig.preset("tome")],
                         ids=lambda c: c.describe())
def test_compile_fullgraph_has_no_graph_breaks_and_no_recompiles(config):
    sample, _, context = unet_inputs()
    latents, labels = dit_inputs()["hidden_states"], torch.tensor([1, 2])
    for model, call in (
        (tiny_unet(), lambda m, t: m(sample, t, context)),
        (tiny_dit(), lambda m, t: m(latents, timestep=t, class_labels=labels)),
    ):
        apply_bigain(model, config)
        torch._dynamo.reset()
        explanation = torch._dynamo.explain(lambda t: call(model, t))(torch.tensor([999, 999]))
        assert explanation.graph_break_count == 0, explanation.break_reasons
        counter = CompileCounter()
        compiled = torch.compile(model, fullgraph=True, backend=counter)
        with torch.no_grad():
            for t in (999, 500, 1):
                call(compiled, torch.tensor([t, t]))
        assert counter.frame_count == 1, f"recompiled {counter.frame_count - 1} times across timesteps"


@pytest.mark.parametrize("realize", [False, True], ids=["unmerge-inlined", "unmerge-realized"])
def test_inductor_compiled_matches_eager(monkeypatch, realize):
    from bigain_export.kernels import launch

    monkeypatch.setattr(launch, "UNMERGE_REALIZE", realize)  # the opt-in realisation lowers alike
    dit = tiny_dit(num_layers=4)
    apply_bigain(dit, BiGainConfig.preset("bigain-both", ratio=0.5, dit_blocks=(1, 2)))
    inputs = dit_inputs()
    eager = run_dit(dit, inputs)
    torch._dynamo.reset()
    compiled = torch.compile(dit, fullgraph=True)
    torch.testing.assert_close(run_dit(compiled, inputs), eager, rtol=1e-4, atol=1e-4)


def test_pixart_is_patched_like_dit():
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(0)
    pixart = PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=8, num_layers=12,
        cross_attention_dim=32, sample_size=16, patch_size=2, caption_channels=24, norm_type="ada_norm_single",
        use_additional_conditions=False,
    ).eval()
    g = torch.Generator().manual_seed(3)
    inputs = dict(hidden_states=torch.randn(2, 4, 16, 16, generator=g), timestep=torch.tensor([10, 900]),
                  encoder_hidden_states=torch.randn(2, 5, 24, generator=g))
    reference = run_dit(pixart, inputs)
    with bigain_patched(pixart, ratio=0.0):
        torch.testing.assert_close(run_dit(pixart, inputs), reference)
    with bigain_patched(pixart, BiGainConfig.preset("bigain-both")) as model:
        assert len(patch_info(model).target_names) == 10  # the paper's DiT blocks
        out = run_dit(pixart, inputs)
        assert torch.isfinite(out).all() and not torch.allclose(out, reference, atol=1e-6)
    assert torch.equal(run_dit(pixart, inputs), reference)


def test_default_unet_level_is_the_first_with_transformer_blocks():
    """SDXL-style: level 0 is plain ResNets, so the default (auto) patches level 1; (0,) says why not."""
    torch.manual_seed(0)
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8,
    ).eval()
    apply_bigain(unet, BiGainConfig())
    names = patch_info(unet).target_names
    # the mid block sits at the lowest resolution, which is level 1 in this two-level UNet
    assert names and all(n.startswith(("down_blocks.1.", "up_blocks.0.", "mid_block.")) for n in names)
    with pytest.raises(UnsupportedModelError, match=r"level\(s\) \[0\].*levels with blocks: \[1\]"):
        apply_bigain(unet, BiGainConfig(unet_levels=(0,)))


def test_python_int_timesteps_do_not_recompile_per_value():
    """A scheduled alpha used ``torch.tensor(t)`` of a Python-int timestep stored on the call
    state, which torch.compile treated as a constant: one graph per timestep. Now, as for the
    unpatched UNet, the int becomes dynamic after its first change and later values reuse it."""
    sample, _, context = unet_inputs()
    for config in (None, BiGainConfig.preset("bigain-kv")):
        unet = tiny_unet()
        if config is not None:
            apply_bigain(unet, config)
        torch._dynamo.reset()
        counter = CompileCounter()
        compiled = torch.compile(unet, fullgraph=True, backend=counter)
        with torch.no_grad():
            compiled(sample, 999, context)
            compiled(sample, 500, context)  # the int turns dynamic here (one recompile per frame)
            settled = counter.frame_count
            for t in (250, 100, 1):
                compiled(sample, t, context)
        assert counter.frame_count == settled, (config, settled, counter.frame_count)


@pytest.mark.parametrize("config", [
    BiGainConfig.preset("bigain-merge", ratio=0.5, plan_reuse=True),
    BiGainConfig.preset("bigain-merge", ratio=0.5, merge_crossattn=True, merge_mlp=True),
    BiGainConfig.preset("bigain-merge", ratio=0.5, match_radius=1),
], ids=lambda c: c.describe())
def test_opt_in_switches_change_output_compile_fullgraph_and_restore(config):
    unet = tiny_unet()
    inputs = unet_inputs()
    plain = run_unet(unet, inputs)
    default = BiGainConfig.preset("bigain-merge", ratio=0.5)
    with bigain_patched(unet, default):
        reference_merge = run_unet(unet, inputs)
    with bigain_patched(unet, config):
        switched = run_unet(unet, inputs)
        explanation = torch._dynamo.explain(lambda: unet(*inputs))()
        assert explanation.graph_break_count == 0, explanation.break_reasons
    assert not torch.allclose(switched, reference_merge, atol=1e-6)
    torch.testing.assert_close(run_unet(unet, inputs), plain)  # removed exactly


def test_plan_reuse_computes_one_plan_per_resolution():
    from bigain_export.ops import library

    calls = []
    original = library.merge_plan
    library.merge_plan = lambda *a, **k: calls.append(a[0].shape) or original(*a, **k)
    try:
        unet = tiny_unet()
        with bigain_patched(unet, BiGainConfig.preset("bigain-merge", ratio=0.5, plan_reuse=True)):
            blocks = len(patch_info(unet).target_names)
            run_unet(unet, unet_inputs())
    finally:
        library.merge_plan = original
    assert blocks > 1 and len(calls) == 1, (blocks, calls)


def test_switches_refuse_models_without_the_layer():
    dit = tiny_dit()
    with pytest.raises(UnsupportedModelError, match="merge_crossattn=True, but block transformer_blocks.1 has no cross-attention"):
        apply_bigain(dit, BiGainConfig.preset("bigain-merge", merge_crossattn=True))
    assert patch_info(dit) is None


def test_a_level_too_small_to_merge_passes_through_with_every_switch():
    """A 1-token-wide level has no 2x2 window: r = 0, the block runs unmerged (no plan, no error),
    with the crossattn/mlp switches too."""
    unet = tiny_unet(sample_size=1)  # 1x1 latent: level 0 has a 1x1 token grid
    sample, t, context = unet_inputs(size=1)
    plain = run_unet(unet, (sample, t, context))
    config = BiGainConfig.preset("bigain-merge", ratio=0.7, merge_crossattn=True, merge_mlp=True, plan_reuse=True)
    with bigain_patched(unet, config):
        torch.testing.assert_close(run_unet(unet, (sample, t, context)), plain)


@pytest.mark.parametrize("preset", ["bigain-both", "tome"])
def test_min_tokens_runs_smaller_layers_uncompressed(preset):
    """A layer below ``min_tokens`` runs exactly as unpatched; at or above it, as without the field."""
    unet, dit = tiny_unet(), tiny_dit()
    u_in, d_in = unet_inputs(), dit_inputs()
    for model, run, inputs in ((unet, run_unet, u_in), (dit, run_dit, d_in)):
        plain = run(model, inputs)
        with bigain_patched(model, BiGainConfig.preset(preset, ratio=0.5)):
            compressed = run(model, inputs)
        with bigain_patched(model, BiGainConfig.preset(preset, ratio=0.5, min_tokens=10**9)):
            torch.testing.assert_close(run(model, inputs), plain, rtol=0, atol=0)
        with bigain_patched(model, BiGainConfig.preset(preset, ratio=0.5, min_tokens=1)):
            torch.testing.assert_close(run(model, inputs), compressed, rtol=0, atol=0)
        assert not torch.allclose(compressed, plain)
