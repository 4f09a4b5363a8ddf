"""Save a :class:`Denoiser` as a diffusers-style model folder (safetensors only, atomically).

Layout (what :func:`~bigain_export.models.registry.load_denoiser` reads back)::

    config.json                          diffusers model config (save_config)
    diffusion_pytorch_model.safetensors  weights, fp16 by default
    scheduler_config.json                the DDPM training-scheduler config
    bigain_model.json                    kind, num_classes, null_label, sample_shape, class_names, + extra
    class_encoder.safetensors            UNet only: ClassTokenEncoder weights
    class_encoder_config.json            UNet only

Files are first written into a temporary sibling folder, then moved in with ``os.replace``, so an
interrupted save never leaves a half-written file under its final name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .denoiser import Denoiser

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
SCHEDULER_NAME = "scheduler_config.json"
META_NAME = "bigain_model.json"
META_FORMAT = 1


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def denoiser_metadata(denoiser: Denoiser) -> dict[str, Any]:
    return {
        "format": META_FORMAT,
        "kind": denoiser.kind,
        "num_classes": denoiser.num_classes,
        "null_label": denoiser.null_label,
        "sample_shape": list(denoiser.sample_shape),
        "class_names": denoiser.class_names,
    }


def save_denoiser(
    denoiser: Denoiser,
    folder: str | os.PathLike,
    dtype: torch.dtype = torch.float16,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``denoiser`` into ``folder`` (created if needed) in ``dtype``; return the folder.

    ``extra`` is merged into bigain_model.json (training record: seed, steps, data hash, ...).
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.tmp-"))
    try:
        model = denoiser.model
        state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        model.save_config(tmp)  # config.json, with _class_name and _diffusers_version
        _write_json(tmp / SCHEDULER_NAME, denoiser.scheduler_config)
        _write_json(tmp / META_NAME, {**denoiser_metadata(denoiser), **(extra or {})})
        if denoiser.class_encoder is not None:
            denoiser.class_encoder.save(tmp, dtype=dtype)
        folder.mkdir(exist_ok=True)
        for path in sorted(tmp.iterdir()):
            os.chmod(path, 0o644)
            os.replace(path, folder / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
