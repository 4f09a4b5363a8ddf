"""Run in the optimum environment (``.venv-optimum``, see scripts/setup.sh): load a layout with
optimum's own ONNX Runtime pipeline and generate from given latents. Imports nothing of bigain_export.

    python optimum_consumer.py LAYOUT LATENTS.npy PROMPT STEPS GUIDANCE OUT.npy
"""

import json
import sys

import numpy as np
import torch
from optimum.onnxruntime import ORTDiffusionPipeline

layout, latents, prompt, steps, guidance, out = sys.argv[1:7]
pipe = ORTDiffusionPipeline.from_pretrained(layout, local_files_only=True)
images = pipe(prompt, num_inference_steps=int(steps), guidance_scale=float(guidance),
              latents=torch.from_numpy(np.load(latents)), output_type="np").images
np.save(out, images)
print(json.dumps({"pipeline": type(pipe).__name__, "unet_inputs": pipe.unet.input_names,
                  "unet_outputs": pipe.unet.output_names}))
