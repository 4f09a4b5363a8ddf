"""A BiGain-patched SD 2.x / SDXL pipeline as the folder optimum's ONNX Runtime pipelines load as is.

``ORTStableDiffusionPipeline.from_pretrained(out_dir)`` (package ``optimum-onnx``, or
``ORTDiffusionPipeline`` / ``ORTStableDiffusionXLPipeline``) reads::

    model_index.json                the source pipeline's (class names, scheduler/tokenizer entries)
    scheduler/  tokenizer/  [tokenizer_2/  feature_extractor/]    copied from the source folder
    unet/model.onnx + config.json   the BiGain graph: sample [B,C,h,w], timestep [] (scalar),
                                    encoder_hidden_states [B,L,D] (+ text_embeds [B,P], time_ids [B,6])
                                    -> out_sample; bigain.ai nodes with standard-op function bodies
    text_encoder/model.onnx + config.json     input_ids -> last_hidden_state, pooler_output, hidden_states.i
    text_encoder_2/  (SDXL)                   input_ids -> text_embeds, last_hidden_state, hidden_states.i
    vae_decoder/model.onnx + config.json      latent_sample -> sample
    vae_encoder/model.onnx + config.json      sample -> latent_parameters
    bigain.json                     what was baked in: config, patched blocks, weights hash, versions

These are the file names, ``config.json`` files and input/output names optimum's own exporter
writes (``optimum.exporters.onnx`` for the ``stable-diffusion`` tasks). ONNX Runtime runs the
``bigain.ai`` nodes through their function bodies, so no custom-op library is needed.
The UNet has the engine's static batch (2 = one prompt with classifier-free guidance) and
resolution; the text encoders and the VAE take any batch. Written into a temporary sibling and
moved into place when complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from ..config import BiGainConfig
from ..errors import ExportError
from .onnx_export import export_onnx, save_model_atomically
from .spec import DenoiserSpec

log = logging.getLogger(__name__)

OPTIMUM_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")
ONNX_NAME = "model.onnx"
COPIED = ("scheduler", "tokenizer", "tokenizer_2", "feature_extractor")


class _TextEncoder(torch.nn.Module):
    """CLIP text encoder with optimum's outputs: all hidden states as ``hidden_states.0 .. N``."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder
        self.projection = hasattr(encoder, "text_projection")

    def output_names(self) -> list[str]:
        first = ["text_embeds", "last_hidden_state"] if self.projection else ["last_hidden_state", "pooler_output"]
        layers = int(self.encoder.config.num_hidden_layers)
        return first + [f"hidden_states.{i}" for i in range(layers + 1)]

    def forward(self, input_ids: torch.Tensor):
        out = self.encoder(input_ids, output_hidden_states=True, return_dict=True)
        first = (out.text_embeds, out.last_hidden_state) if self.projection else (out.last_hidden_state, out.pooler_output)
        return (*first, *out.hidden_states)


class _VaeDecoder(torch.nn.Module):
    def __init__(self, vae: torch.nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latent_sample, return_dict=False)[0]


class _VaeEncoder(torch.nn.Module):
    def __init__(self, vae: torch.nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(sample, return_dict=False)[0].parameters  # mean and log-variance, concatenated


def _export_part(module: torch.nn.Module, example: torch.Tensor, input_name: str, output_names: list[str], path: Path) -> None:
    """Trace one companion module with a dynamic batch axis to ``path`` (fp32). The example has
    batch 2: torch.export specialises a size-1 dimension to a constant."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                module.eval(), (example,), dynamo=True, input_names=[input_name], output_names=output_names,
                dynamic_shapes=({0: batch},), external_data=False, verbose=False,
            )
    except Exception as exc:  # the exporter's own errors are long; keep the first line
        raise ExportError(f"exporting {path.parent.name} failed: {str(exc).strip().splitlines()[0][:300]}") from exc
    save_model_atomically(program.model_proto, path)


def _save_config(component, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(component, "save_config"):  # diffusers models
        component.save_config(folder)
    else:  # transformers models
        component.config.to_json_file(str(folder / "config.json"))


def _copy_or_save(pipe, name: str, source: Path | None, staging: Path) -> None:
    component = getattr(pipe, name, None)
    if component is None:
        return
    if source is not None and (source / name).is_dir():  # exactly the files the user has
        shutil.copytree(source / name, staging / name)
    else:
        component.save_pretrained(staging / name)


def export_optimum(
    denoiser,
    config: BiGainConfig,
    out_dir: str | os.PathLike,
    *,
    batch: int = 2,
    precision: str = "fp32",
    metadata: dict | None = None,
) -> Path:
    """Write ``denoiser``'s pipeline, with ``config`` baked into its UNet, as an optimum ORT layout.

    Args:
        denoiser: a denoiser loaded from an SD 2.x or SDXL pipeline folder (``denoiser.pipeline``).
        batch: the UNet's static batch (rows per UNet call: 2 per prompt with guidance).
        precision: the UNet graph's compute dtype (I/O stays float32).
        metadata: extra facts for ``bigain.json``.
    """
    from ..engine.manifest import versions, weights_sha256

    pipe = getattr(denoiser, "pipeline", None)
    cls = type(pipe).__name__ if pipe is not None else None
    if cls not in OPTIMUM_PIPELINES:
        raise ExportError(f"{denoiser.name}: the optimum layout needs a {' or '.join(OPTIMUM_PIPELINES)} folder; got "
                          f"{cls or 'a bare model'} (a DiT runs as EngineTransformer inside DiTPipeline instead)")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.building-"))
    source = Path(pipe.name_or_path) if pipe.name_or_path and Path(pipe.name_or_path).is_dir() else None
    try:
        log.info("[1/3] exporting the BiGain UNet (%s) ...", config.describe())
        spec = DenoiserSpec.for_denoiser(denoiser, batch, precision, timestep="scalar", output="out_sample")
        unet = export_onnx(denoiser, config, staging / "unet" / ONNX_NAME, spec=spec)
        _save_config(pipe.unet, staging / "unet")
        log.info("[2/3] exporting the text encoders and the VAE ...")
        length = int(pipe.tokenizer.model_max_length)
        for name in ("text_encoder", "text_encoder_2"):
            encoder = getattr(pipe, name, None)
            if encoder is not None:
                wrapper = _TextEncoder(encoder)
                ids = torch.zeros((2, length), dtype=torch.int64)
                _export_part(wrapper, ids, "input_ids", wrapper.output_names(), staging / name / ONNX_NAME)
                _save_config(encoder, staging / name)
        vae = pipe.vae.float()
        image = torch.zeros((2, *denoiser.image_shape))
        _export_part(_VaeDecoder(vae), torch.zeros((2, *denoiser.sample_shape)), "latent_sample", ["sample"],
                     staging / "vae_decoder" / ONNX_NAME)
        _export_part(_VaeEncoder(vae), image, "sample", ["latent_parameters"], staging / "vae_encoder" / ONNX_NAME)
        for part in ("vae_decoder", "vae_encoder"):
            _save_config(vae, staging / part)
        log.info("[3/3] writing the pipeline files ...")
        for name in COPIED:
            _copy_or_save(pipe, name, source, staging)
        index = json.loads((source / "model_index.json").read_text()) if source else dict(pipe.config)
        (staging / "model_index.json").write_text(json.dumps(index, indent=2, default=str) + "\n")
        (staging / "bigain.json").write_text(json.dumps({
            "model": denoiser.name, "model_sha256": weights_sha256(denoiser), "config": config.to_dict(),
            "unet_spec": spec.to_dict(), "custom_nodes": unet.custom_nodes, "patched": unet.patched,
            "versions": versions(), **(metadata or {}),
        }, indent=2, sort_keys=True) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir
