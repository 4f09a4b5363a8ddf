"""Real pipelines end to end on tiny random SD 2-, SDXL- and DiT-style folders (issue 10).

For each: load the folder -> patch -> export -> engine -> validate on a small image folder (accuracy
and FID through the VAE) -> the engine inside the stock diffusers pipeline gives the images of the
eager patched pipeline. The folders are written by ``tiny_pipelines.py`` exactly as diffusers
saves real ones, so this is the code path of stable-diffusion-2-base, SDXL base and DiT-XL-2-256.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="SD / SDXL pipelines need transformers (pip install 'bigain-export[pipelines]')")

import tiny_pipelines as tp  # noqa: E402
from validate_toys import PixelFeatures  # noqa: E402

from bigain_export.config import BiGainConfig  # noqa: E402
from bigain_export.engine.build import EngineEpsFn, build_engine, load_engine  # noqa: E402
from bigain_export.engine.diffusers_modules import EngineTransformer, EngineUNet  # noqa: E402
from bigain_export.errors import DataError, EngineError, ExportError, UnsupportedModelError  # noqa: E402
from bigain_export.export.optimum_layout import export_optimum  # noqa: E402
from bigain_export.models import load_denoiser  # noqa: E402
from bigain_export.patch import apply_bigain, bigain_patched, remove_bigain  # noqa: E402
from bigain_export.validate.fid import compute_statistics  # noqa: E402
from bigain_export.validate.inputs import open_engine_eps, prepare_inputs  # noqa: E402
from bigain_export.validate.run import ValidationSettings, validate  # noqa: E402
from bigain_export.validate.sampling import SamplingConfig  # noqa: E402
from bigain_export.validate.schedule import ClassifierSchedule  # noqa: E402

pytestmark = pytest.mark.slow
KINDS = ("sd", "sdxl", "dit")
CLASSES = ["tabby", "goldfish", "school bus"]  # DiT: names from id2label; SD/SDXL: prompts
CONFIG = BiGainConfig.preset("bigain-both", ratio=0.5)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    paths = {kind: tp.WRITERS[kind](root / kind) for kind in KINDS}
    paths["data"] = tp.write_image_folder(root / "data", CLASSES, per_class=2)
    return paths


@pytest.fixture(scope="module")
def engines(folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("engines")
    built = {}
    for kind in KINDS:
        denoiser = load_denoiser(str(folders[kind]))
        engine, report = build_engine(denoiser, CONFIG, out / kind, backend="ort-cpu", batch=2)
        assert report.passed, report.summary()
        built[kind] = engine
    return built


@pytest.mark.parametrize("kind", KINDS)
def test_pipeline_folder_is_a_latent_denoiser(folders, kind):
    d = load_denoiser(str(folders[kind]), class_names=CLASSES)
    assert d.pipeline is not None and d.space.kind == "latents" and d.num_classes == 3 and d.null_label == 3
    assert d.image_shape == (3, 32, 32) and d.sample_shape == (4, 16, 16)
    assert d.model is (d.pipeline.transformer if kind == "dit" else d.pipeline.unet)
    names = [c.name for c in d.conditions]
    assert names == {"sd": ["encoder_hidden_states"], "sdxl": ["encoder_hidden_states", "text_embeds", "time_ids"],
                     "dit": ["class_labels"]}[kind]
    # images -> latents is the VAE posterior mean times the scaling factor (Diffusion Classifier)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    vae = d.pipeline.vae
    with torch.no_grad():
        expected = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
        torch.testing.assert_close(d.encode_images(images), expected)
        torch.testing.assert_close(d.decode(expected), vae.decode(expected / vae.config.scaling_factor).sample.clamp(-1, 1))
    cond = d.condition(torch.tensor([0, 3]))
    if kind == "dit":  # candidates map to the model's ImageNet-style labels; the null row to label 1000
        assert cond["class_labels"].tolist() == [0, 1000] and d.class_names == CLASSES
    else:  # the unconditional row: the empty prompt (SD) / zeros (SDXL force_zeros_for_empty_prompt)
        prompt_embeds, _ = d.pipeline.encode_prompt(["a photo of a tabby."], "cpu", 1, False)[:2] if kind == "sd" else (None, None)
        if kind == "sd":
            torch.testing.assert_close(cond["encoder_hidden_states"][0], prompt_embeds[0])
        else:
            assert cond["encoder_hidden_states"][1].abs().max() == 0 and cond["text_embeds"][1].abs().max() == 0
            assert cond["time_ids"].tolist() == [[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]] * 2


@pytest.mark.parametrize("kind", KINDS)
def test_engine_manifest_states_the_patched_level(engines, kind, capsys):
    manifest = engines[kind].manifest
    assert manifest.config["unet_levels"] is None  # the default: auto
    levels = {"sd": [0], "sdxl": [1], "dit": None}[kind]
    assert manifest.patched["unet_levels"] == levels and manifest.patched["blocks"]
    if kind == "sdxl":  # no attention at level 0: only down_blocks.1 / up_blocks.0 / the mid block
        assert not any(b.startswith(("down_blocks.0", "up_blocks.1")) for b in manifest.patched["blocks"])
    inputs = [c["name"] for c in manifest.spec.get("conditions", [{"name": "class_labels"}])]
    assert inputs == [c.name for c in load_engine(engines[kind].path).spec.conditions]
    from bigain_export.cli.main import main

    assert main(["info", str(engines[kind].path)]) == 0
    where = {"sd": " at UNet level(s) [0]", "sdxl": " at UNet level(s) [1]", "dit": ""}[kind]
    assert f"patched:    {len(manifest.patched['blocks'])} blocks{where}\n" in capsys.readouterr().out


def _pipeline_images(pipe, kind, seed=0, steps=3):
    g = torch.Generator().manual_seed(seed)
    if kind == "dit":
        return pipe(class_labels=[2], num_inference_steps=steps, generator=g, output_type="np").images
    return pipe("a photo of a goldfish", num_inference_steps=steps, generator=g, output_type="np").images


@pytest.mark.parametrize("kind", KINDS)
def test_engine_inside_the_stock_pipeline_matches_eager_patched(folders, engines, kind):
    """``pipe.unet = EngineUNet(...)`` (``pipe.transformer = EngineTransformer(...)``), then ``pipe(...)``."""
    d = load_denoiser(str(folders[kind]))
    pipe = d.pipeline
    apply_bigain(pipe, CONFIG)
    eager = _pipeline_images(pipe, kind)
    remove_bigain(pipe)
    plain = _pipeline_images(pipe, kind)
    if kind == "dit":
        pipe.transformer = EngineTransformer(engines[kind].path, model=pipe.transformer)
    else:
        pipe.unet = EngineUNet(engines[kind].path, model=pipe.unet)
    engine = _pipeline_images(pipe, kind)
    assert engine.shape == (1, 32, 32, 3)
    assert abs(engine - eager).max() < 1e-4  # the engine is the patched model
    assert abs(plain - eager).max() > 10 * abs(engine - eager).max()  # and patching changed the images


def test_engine_module_refuses_another_pipeline(folders, engines):
    sd, sdxl = load_denoiser(str(folders["sd"])), load_denoiser(str(folders["sdxl"]))
    with pytest.raises(EngineError, match="built from other weights"):
        EngineUNet(engines["sd"].path, model=sdxl.model)
    with pytest.raises(EngineError, match="EngineTransformer serves DiTTransformer2DModel"):
        EngineTransformer(engines["sd"].path)
    with pytest.raises(EngineError, match="an engine of a DiTTransformer2DModel"):
        EngineUNet(engines["dit"].path)
    with pytest.raises(EngineError, match="cuda_graph=True needs an 'ort-cuda' engine; this one runs on 'ort-cpu'"):
        EngineTransformer(engines["dit"].path, cuda_graph=True)  # the CUDA-graph runner: ort-cuda engines only
    pipe = sd.pipeline
    pipe.unet = EngineUNet(engines["sdxl"].path)  # SDXL's engine in SD's pipeline: widths differ
    with pytest.raises(EngineError, match=r"input 'encoder_hidden_states' has shape \[2, 32, 16\]; this engine takes \[2, 32, 32\]"):
        pipe.unet(torch.randn(2, 4, 16, 16), 10, torch.randn(2, 32, 16),
                  added_cond_kwargs={"text_embeds": torch.randn(2, 16), "time_ids": torch.zeros(2, 6)})


@pytest.mark.parametrize("kind", KINDS)
def test_validate_on_an_image_folder_through_the_vae(folders, engines, kind, tmp_path):
    """Classifier on VAE latents of the user's PNGs; samples decoded by the VAE for FID and grids."""
    denoiser = load_denoiser(str(folders[kind]))
    inputs = prepare_inputs(denoiser, str(folders["data"]), progress=False)
    d = inputs.denoiser
    # sorted folder names are the classes; --limit-friendly round-robin order over them
    assert d.class_names == sorted(CLASSES) and inputs.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert inputs.images.shape == (6, 4, 16, 16) and inputs.fid_images.shape == (6, 3, 32, 32)
    torch.testing.assert_close(inputs.images, d.encode_images(inputs.fid_images))
    features = PixelFeatures()

    def eager(sample, t, labels):
        apply_bigain(d, CONFIG)
        return d(sample, t, labels)

    import contextlib

    with contextlib.ExitStack() as stack:
        engine_eps, batch = open_engine_eps(str(engines[kind].path), d, CONFIG, stack)
        settings = ValidationSettings(
            num_classes=3, scheduler_config=d.scheduler_config, schedule=ClassifierSchedule.named("uniform-2"),
            sampling=SamplingConfig(num_steps=2, guidance_scale=2.0, null_label=d.null_label), drift_inputs=2,
            batch_size=batch)
        report = validate({"eager": eager, "engine": engine_eps}, inputs.images, inputs.labels, settings, tmp_path,
                          fid_reference=compute_statistics(inputs.fid_images, features), feature_fn=features,
                          decode=d.decode, progress=False)
    eager_m, engine_m = report["methods"]["eager"], report["methods"]["engine"]
    assert eager_m["classification"]["predictions"] == engine_m["classification"]["predictions"]
    assert engine_m["drift"]["max_abs"] < 1e-4 and abs(engine_m["fid"] - eager_m["fid"]) < 1e-2 * max(1, eager_m["fid"])
    assert report["settings"]["fid"]["generated_per_method"] == 6
    assert (tmp_path / "report.json").is_file() and (tmp_path / "samples.png").is_file()


def test_bad_pipeline_folders_and_classes(folders, tmp_path, monkeypatch):
    broken = tmp_path / "sd-no-vae"
    shutil.copytree(folders["sd"], broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(DataError, match="needs its VAE"):
        load_denoiser(str(broken))
    index = json.loads((folders["sd"] / "model_index.json").read_text())
    other = tmp_path / "kandinsky"
    shutil.copytree(folders["sd"], other)
    (other / "model_index.json").write_text(json.dumps({**index, "_class_name": "KandinskyPipeline"}))
    with pytest.raises(UnsupportedModelError, match="'KandinskyPipeline' is not supported; allowed: StableDiffusionPipeline"):
        load_denoiser(str(other))
    monkeypatch.setitem(sys.modules, "transformers", None)  # as on a machine without the pipelines extra
    with pytest.raises(UnsupportedModelError, match=r"which need `transformers` \(pip install 'bigain-export\[pipelines\]'\)"):
        load_denoiser(str(folders["sd"]))
    monkeypatch.undo()
    with pytest.raises(DataError, match="class 'axolotl' is not one of .*labels.*'golden retriever'"):
        load_denoiser(str(folders["dit"]), class_names=["tabby", "axolotl"])
    classes = tmp_path / "data"
    shutil.copytree(folders["data"], classes)
    (classes / "classes.json").write_text(json.dumps({c: {"name": c, "prompt": f"a {c}"} for c in CLASSES}))
    with pytest.raises(DataError, match="class-conditional .* prompts cannot condition it"):
        prepare_inputs(load_denoiser(str(folders["dit"])), str(classes), progress=False)
    with pytest.raises(DataError, match="class 'goldfish' is not one of builtin:fmnist-dit's labels"):
        prepare_inputs(load_denoiser("builtin:fmnist-dit"), str(folders["data"]), progress=False)


OPTIMUM_PYTHON = Path(__file__).resolve().parents[1] / ".venv-optimum" / "bin" / "python"


@pytest.mark.parametrize("kind", ("sd", "sdxl"))
def test_optimum_layout_loads_in_optimums_ort_pipeline(folders, kind, tmp_path):
    """optimum's own ORTDiffusionPipeline (its environment, not ours) loads the layout and gives the
    eager patched pipeline's images; the UNet's bigain.ai nodes run through their function bodies."""
    import numpy as np
    import onnx

    if not OPTIMUM_PYTHON.is_file():
        pytest.skip(f"{OPTIMUM_PYTHON} missing: scripts/setup.sh makes it (unless BIGAIN_OPTIMUM=skip)")
    layout = tmp_path / "layout"  # written through the CLI: bigain-export export --layout optimum
    assert _cli("export", "--layout", "optimum", "--model", folders[kind], "--config", "bigain-both", "--out", layout) == 0
    d = load_denoiser(str(folders[kind]))
    unet = onnx.load(str(layout / "unet" / "model.onnx"))
    assert {n.domain for n in unet.graph.node} >= {"bigain.ai"} and {f.domain for f in unet.functions} == {"bigain.ai"}
    assert [i.name for i in unet.graph.input][:3] == ["sample", "timestep", "encoder_hidden_states"]
    assert [o.name for o in unet.graph.output] == ["out_sample"]
    assert json.loads((layout / "bigain.json").read_text())["config"] == CONFIG.to_dict()
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(3))
    np.save(tmp_path / "latents.npy", latents.numpy())
    pipe = d.pipeline
    with bigain_patched(pipe, CONFIG):
        eager = pipe("a photo of a cat", num_inference_steps=3, guidance_scale=5.0, latents=latents, output_type="np").images
    result = subprocess.run(
        [str(OPTIMUM_PYTHON), str(Path(__file__).parent / "optimum_consumer.py"), str(layout), str(tmp_path / "latents.npy"),
         "a photo of a cat", "3", "5.0", str(tmp_path / "out.npy")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["pipeline"] == {"sd": "ORTStableDiffusionPipeline", "sdxl": "ORTStableDiffusionXLPipeline"}[kind]
    optimum_images = np.load(tmp_path / "out.npy")
    assert optimum_images.shape == eager.shape and abs(optimum_images - eager).max() < 1e-4


def test_optimum_layout_refuses_a_dit(folders, tmp_path):
    with pytest.raises(ExportError, match="needs a StableDiffusionPipeline or StableDiffusionXLPipeline folder; got DiTPipeline"):
        export_optimum(load_denoiser(str(folders["dit"])), CONFIG, tmp_path / "layout")
    assert not list(tmp_path.iterdir())  # nothing half-written


# -- the command line ---------------------------------------------------------------------------


def _cli(*argv) -> int:
    from bigain_export.cli.main import main

    return main([str(a) for a in argv])


def test_cli_validate_an_sd_engine_on_an_image_folder_with_fid(folders, engines, tmp_path, capsys, monkeypatch):
    """validate --data DIR --engine E: classes from the folders, prompts from --prompt-template,
    accuracy on VAE latents, FID of VAE-decoded samples against the folder's pixels."""
    import bigain_export.validate.fid as fid

    # Inception + 2048-d Frechet distances take ~1 min on 2 cores; the FID path is what is tested here.
    monkeypatch.setattr(fid, "InceptionFeatures", lambda device="cpu": PixelFeatures())
    out = tmp_path / "report"
    code = _cli("validate", "--engine", engines["sd"].path, "--data", folders["data"], "--out", out,
                "--prompt-template", "a picture of a {}", "--schedule", "uniform-2", "--steps", "2", "--guidance", "1",
                "--drift-inputs", "2", "--fid-cache", tmp_path / "cache", "--no-progress")
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    run = report["settings"]["run"]
    assert run["class_names"] == sorted(CLASSES) and run["prompts"][0] == "a picture of a goldfish"
    assert report["settings"]["data"]["image_shape"] == [4, 16, 16]  # the classifier ran on latents
    assert set(report["methods"]) == {"eager-none", "eager-same-config", "engine"}
    assert all(m["fid"] is not None and m["num_images"] == 6 for m in report["methods"].values())
    assert report["methods"]["engine"]["classification"]["predictions"] == \
        report["methods"]["eager-same-config"]["classification"]["predictions"]


@pytest.mark.parametrize("kind", KINDS)
def test_cli_generate_with_the_engine_matches_eager(folders, engines, kind, tmp_path, capsys):
    from PIL import Image
    import numpy as np

    what = ("--classes", "goldfish", "tabby") if kind == "dit" else ("--prompts", "a goldfish", "a cat")
    common = (*what, "--seeds", "1", "2", "--steps", "2", "--no-progress")
    assert _cli("generate", "--engine", engines[kind].path, *common, "--out", tmp_path / "engine") == 0
    assert _cli("generate", "--model", folders[kind], "--config", json.dumps({"preset": "bigain-both"}), *common,
                "--out", tmp_path / "eager") == 0
    record = json.loads((tmp_path / "engine" / "generate.json").read_text())
    assert record["sampler"] == {"sd": "DDIMScheduler", "sdxl": "EulerDiscreteScheduler", "dit": "DDIMScheduler"}[kind]
    assert record["guidance"] == {"sd": 7.5, "sdxl": 5.0, "dit": 4.0}[kind]  # the pipeline's own default
    assert [i["seed"] for i in record["images"]] == [1, 2, 1, 2] and (tmp_path / "engine" / "grid.png").is_file()
    for item in record["images"]:
        a = np.asarray(Image.open(tmp_path / "engine" / item["file"]), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "eager" / item["file"]), dtype=np.int16)
        assert a.shape == (32, 32, 3) and np.abs(a - b).max() <= 1  # PNG rounding only
    assert Image.open(tmp_path / "engine" / "grid.png").size == (2 * 34 + 2, 2 * 34 + 2)


def test_cli_bad_input_is_one_line(folders, engines, tmp_path, capsys):
    def error(*argv) -> str:
        assert _cli(*argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        return err

    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    assert "has no images in its class sub-folders" in error("validate", "--model", folders["sd"], "--data", empty,
                                                             "--out", tmp_path / "r")
    shutil.copytree(folders["data"] / "tabby", empty / "tabby")
    assert "class folder(s) ['cat'] hold no images" in error("validate", "--model", folders["sd"], "--data", empty,
                                                             "--out", tmp_path / "r")
    (empty / "cat" / "broken.png").write_bytes(b"not a png")
    assert "cannot read image" in error("validate", "--model", folders["sd"], "--data", empty, "--out", tmp_path / "r",
                                        "--no-progress")
    deep = tmp_path / "deep"
    (deep / "cat").mkdir(parents=True)
    from PIL import Image

    Image.new("I;16", (8, 8)).save(deep / "cat" / "x.png")  # a 16-bit PNG
    assert "image mode 'I;16'" in error("validate", "--model", folders["sd"], "--data", deep, "--out", tmp_path / "r",
                                        "--no-progress")
    assert "prompts cannot condition it" in error("generate", "--model", folders["dit"], "--prompts", "a cat", "--out", tmp_path / "g")
    assert "class 'axolotl' is not one of" in error("generate", "--model", folders["dit"], "--classes", "axolotl",
                                                    "--out", tmp_path / "g")
    assert "is not one of builtin:fmnist-dit's labels" in error("generate", "--classes", "cat", "--out", tmp_path / "g")
    assert "prompts cannot condition it" in error("generate", "--prompts", "a shoe", "--out", tmp_path / "g")
    not_a_model = tmp_path / "nothing"
    not_a_model.mkdir()
    assert "is not a diffusers folder" in error("generate", "--model", not_a_model, "--classes", "x", "--out", tmp_path / "g")
    # an engine of one pipeline used with another
    assert "built from other weights" in error("generate", "--engine", engines["sd"].path, "--model", folders["sdxl"],
                                               "--prompts", "a cat", "--out", tmp_path / "g")
    assert "has no {} slot" in error("validate", "--model", folders["sd"], "--data", folders["data"],
                                     "--prompt-template", "a photo", "--out", tmp_path / "r")


def test_cli_sweep_an_sd_pipeline_on_an_image_folder(folders, tmp_path, capsys, monkeypatch):
    """sweep takes the data as validate does: an image folder's classes become the prompts, the
    classifier runs on VAE latents, FID compares VAE-decoded samples with the folder's pixels, and
    engine points are fed through the pipeline's text conditioning."""
    import bigain_export.sweep.run as sweep_run

    monkeypatch.setattr(sweep_run, "InceptionFeatures", lambda device="cpu": PixelFeatures())
    out = tmp_path / "sweep"
    code = _cli("sweep", "--model", folders["sd"], "--data", folders["data"], "--out", out,
                "--grid", "none", "m=bigain-merge:ratio=0.5", "--modes", "eager", "engine", "--backend", "ort-cpu",
                "--batch-size", "2", "--schedule", "uniform-2", "--steps", "2", "--guidance", "1",
                "--drift-inputs", "2", "--latency-warmup", "1", "--latency-repeats", "1",
                "--fid-cache", tmp_path / "cache", "--no-progress")
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "sweep.json").read_text())
    by_name = {p["name"]: p for p in report["points"]}
    assert set(by_name) == {"none", "m", "engine:none", "engine:m"}
    assert report["provenance"]["run"]["model"]["prompts"][0] == "a photo of a goldfish."
    assert all(p["num_images"] == 6 and p["fid"] is not None for p in by_name.values())
    assert by_name["engine:m"]["predictions"] == by_name["m"]["predictions"]
    # latents without real pixels are refused before any work
    latents = tmp_path / "latents.npz"
    np.savez(latents, images=np.zeros((2, 4, 16, 16), np.float32), labels=np.array([0, 1]), class_names=np.array(CLASSES))
    assert _cli("sweep", "--model", folders["sd"], "--data", latents, "--out", tmp_path / "s2", "--no-progress") == 2
    assert "FID needs real images" in capsys.readouterr().err
