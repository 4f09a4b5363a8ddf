"""Generate images from class names or prompts, with the eager (patched) model or an engine.

Two paths, one result (images ``[3 or 1, H, W]`` in [-1, 1], one per request and seed):

* a **pipeline folder** (SD 2.x, SDXL, DiT): the stock diffusers pipeline generates, with its
  own text encoders, guidance and VAE; BiGain is applied to its network (eager), or the network
  is swapped for :class:`~bigain_export.engine.diffusers_modules.EngineUNet` /
  ``EngineTransformer`` (engine). The default sampler is the pipeline's scheduler; ``ddim``,
  ``euler`` or any diffusers scheduler class name swap it (from the same config).
* a **built-in or model folder** (class-conditional, pixel space): the project's sampler
  (:mod:`bigain_export.validate.sampling`, DDIM or Euler from the model's scheduler config).

Image i of a request uses ``torch.Generator().manual_seed(seeds[i])``, so an engine and the
eager model draw the same starting noise. Defaults (sampler, steps, guidance) come from the
model: ``Denoiser.sampling_defaults`` (the built-ins' cards: DDIM, 50, guidance 1.0; a pipeline:
its scheduler and ``__call__`` defaults).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from ..config import BiGainConfig
from ..errors import ConfigError, DataError
from .prompts import DEFAULT_TEMPLATE


@dataclass(frozen=True)
class Request:
    """What to draw: ``classes`` (names) or ``prompts`` (text pipelines), each once per seed."""

    classes: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    steps: int | None = None
    sampler: str | None = None
    guidance: float | None = None
    prompt_template: str = DEFAULT_TEMPLATE

    def __post_init__(self) -> None:
        if bool(self.classes) == bool(self.prompts):
            raise ConfigError("generate needs class names or prompts (one of the two); allowed: --classes NAME ... "
                              "or --prompts TEXT ...")
        if not self.seeds:
            raise ConfigError("generate needs at least one seed")


@dataclass(frozen=True)
class Generated:
    label: str  # the class name or prompt
    seed: int
    image: torch.Tensor  # [C, H, W] float32 in [-1, 1]


def settings_for(denoiser, request: Request) -> dict:
    """The sampler, steps and guidance to use: the request's, else the model's defaults."""
    defaults = denoiser.sampling_defaults
    return {"sampler": request.sampler or defaults["sampler"], "steps": int(request.steps or defaults["steps"]),
            "guidance": float(defaults["guidance"] if request.guidance is None else request.guidance)}


def generate(denoiser, request: Request, *, config: BiGainConfig | None = None, engine=None,
             progress: bool = False) -> tuple[list[Generated], dict]:
    """Draw every (class or prompt) x seed of ``request``; returns (images, settings used).

    Args:
        config: BiGain config for the eager model (None: unpatched). Ignored with ``engine``.
        engine: an ``engine.build.Engine`` of this model (checked by the caller), or None.
    """
    settings = settings_for(denoiser, request)
    if denoiser.pipeline is not None:
        return _with_pipeline(denoiser, request, settings, config, engine, progress), settings
    return _with_sampler(denoiser, request, settings, config, engine, progress), settings


# -- pipelines ----------------------------------------------------------------------------------


def _scheduler(pipe, sampler: str):
    import diffusers

    name = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler"}.get(sampler, sampler)
    if name == type(pipe.scheduler).__name__:
        return pipe.scheduler
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin)):
        raise ConfigError(f"--sampler {sampler!r} is not allowed; allowed: ddim, euler, or a diffusers scheduler "
                          f"class name (this pipeline's: {type(pipe.scheduler).__name__})")
    return cls.from_config(pipe.scheduler.config)


@contextlib.contextmanager
def _network(pipe, denoiser, config, engine):
    """The pipeline with its network patched (eager) or replaced by the engine, restored on exit."""
    from ..patch import bigain_patched

    attr = "transformer" if denoiser.kind == "dit" else "unet"
    if engine is not None:
        from ..engine.diffusers_modules import EngineTransformer, EngineUNet

        original = getattr(pipe, attr)
        module = (EngineTransformer if attr == "transformer" else EngineUNet)(engine)
        setattr(pipe, attr, module)
        try:
            yield pipe
        finally:
            setattr(pipe, attr, original)
            module.close()
    elif config is not None and config.enabled:
        with bigain_patched(pipe, config):
            yield pipe
    else:
        yield pipe


def _with_pipeline(denoiser, request, settings, config, engine, progress) -> list[Generated]:
    pipe = denoiser.pipeline
    is_dit = denoiser.kind == "dit"
    if is_dit and request.prompts:
        raise DataError(f"{denoiser.name} is class-conditional (DiT): prompts cannot condition it; allowed: --classes "
                        "with names from its id2label")
    if is_dit:
        known = getattr(denoiser, "label_names", {}) or {}
        jobs = []
        for name in request.classes:
            if name.strip().lower() not in known:
                examples = ", ".join(repr(n) for n in sorted(known)[:5])
                raise DataError(f"class {name!r} is not one of {denoiser.name}'s labels (e.g. {examples}); allowed: "
                                "names from its id2label")
            jobs.append((name, {"class_labels": [known[name.strip().lower()]]}))
    else:
        texts = list(request.prompts) or [request.prompt_template.format(c) for c in request.classes]
        jobs = [(text, {"prompt": text}) for text in texts]
    pipe.to(denoiser.device)  # load_denoiser moved only the network; text encoders and VAE follow it
    original_scheduler = pipe.scheduler
    pipe.scheduler = _scheduler(pipe, settings["sampler"])
    pipe.set_progress_bar_config(disable=not progress)
    out = []
    try:
        with _network(pipe, denoiser, config, engine), torch.no_grad():
            for label, kwargs in jobs:
                for seed in request.seeds:
                    result = pipe(**kwargs, num_inference_steps=settings["steps"], guidance_scale=settings["guidance"],
                                  generator=torch.Generator().manual_seed(seed), output_type="np")
                    image = torch.from_numpy(result.images[0]).permute(2, 0, 1)  # [H, W, C] in [0, 1]
                    out.append(Generated(label, seed, image.float() * 2 - 1))
    finally:
        pipe.scheduler = original_scheduler
    return out


# -- built-ins and model folders ----------------------------------------------------------------


def _with_sampler(denoiser, request, settings, config, engine, progress) -> list[Generated]:
    from ..patch import bigain_patched
    from ..validate.sampling import SAMPLERS, SamplingConfig, sample

    if request.prompts:
        raise DataError(f"{denoiser.name} is class-conditional: prompts cannot condition it; allowed: --classes "
                        f"{', '.join(repr(n) for n in (denoiser.class_names or [])[:4])} ...")
    if settings["sampler"] not in SAMPLERS:
        raise ConfigError(f"--sampler {settings['sampler']!r} is not allowed for {denoiser.name}; allowed: {' | '.join(SAMPLERS)}")
    names = {n.lower(): k for k, n in enumerate(denoiser.class_names or [])}
    labels = []
    for name in request.classes:
        if name.strip().lower() not in names:
            raise DataError(f"class {name!r} is not one of {denoiser.name}'s labels; allowed: "
                            f"{', '.join(denoiser.class_names or []) or '(the model has no class names)'}")
        labels.append(names[name.strip().lower()])
    guided = settings["guidance"] != 1
    out = []
    with contextlib.ExitStack() as stack:
        if engine is not None:
            from ..engine.build import EngineEpsFn

            eps_fn, batch = stack.enter_context(EngineEpsFn(engine, condition=denoiser.condition)), engine.spec.batch
        else:
            if config is not None and config.enabled:
                stack.enter_context(bigain_patched(denoiser, config))
            eps_fn, batch = denoiser, 8
        for name, label in zip(request.classes, labels):
            for seed in request.seeds:
                sampling = SamplingConfig(sampler=settings["sampler"], num_steps=settings["steps"],
                                          guidance_scale=settings["guidance"],
                                          null_label=denoiser.null_label if guided else None, seed=seed)
                with torch.no_grad():
                    x = sample(eps_fn, torch.tensor([label]), scheduler_config=denoiser.scheduler_config,
                               sample_shape=denoiser.sample_shape, config=sampling, batch_size=batch,
                               device=denoiser.device, progress=progress)
                out.append(Generated(name, seed, denoiser.decode(x)[0].float().cpu()))
    return out


# -- files --------------------------------------------------------------------------------------


def to_pil(image: torch.Tensor):
    from PIL import Image

    pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    array = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def grid(images: list[torch.Tensor], columns: int, pad: int = 2) -> torch.Tensor:
    """Tile ``[C, H, W]`` images (same size) into one ``[C, rows*(H+pad)+pad, cols*(W+pad)+pad]``, white padding."""
    c, h, w = images[0].shape
    columns = max(1, min(columns, len(images)))
    rows = -(-len(images) // columns)
    canvas = torch.ones(c, rows * (h + pad) + pad, columns * (w + pad) + pad)
    for k, image in enumerate(images):
        r, q = divmod(k, columns)
        canvas[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = image
    return canvas
