"""A user's own images: one sub-folder per class (the usual image-folder layout), any common format.

::

    DIR/
      golden_retriever/  0001.jpg 0002.png ...
      tabby/             ...
      classes.json       optional: {"golden_retriever": "golden retriever", ...}
                         or {"n02099601": {"name": "golden retriever", "prompt": "a photo of a dog."}}
      classes.txt        optional instead, one class per line: "<folder> <name>" (ImageNet's
                         LOC_synset_mapping.txt: "n02099601 golden retriever")

Without a classes file every sub-folder is a class, in sorted order, named after the folder
(underscores read as spaces); with one, exactly the folders it lists, in its order, with its names
(and prompts, for text-to-image models). Images are read with Pillow (PNG, JPEG, WebP, BMP, GIF,
TIFF, PPM), converted to RGB (or greyscale for 1-channel models), resized so the shorter side is
the model's resolution (bicubic, antialiased) and centre-cropped to a square, as Diffusion
Classifier does, then scaled to [-1, 1]. 16-bit and float images are refused (not silently
clipped). With ``limit`` the first images are taken round-robin over the classes, so a small
limit still covers every class.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
EIGHT_BIT_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
CLASS_FILES = ("classes.json", "classes.txt")


@dataclass
class LabeledImages:
    """Images with labels, as the validation commands take them.

    Attributes:
        images: ``[N, C, H, W]`` float32 in [-1, 1] (pixels, or model space for an ``.npz`` of latents).
        labels: ``[N]`` long in ``0 .. len(class_names) - 1``.
        class_names: the classes, indexed by label (None when the source has no names).
        prompts: one prompt per class from a classes file, else None (the prompt template applies).
        pixels: True when ``images`` are pixels (image folders, Fashion-MNIST), False for model space.
        source: where they came from (for reports).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str] | None
    prompts: list[str] | None = None
    pixels: bool = True
    source: str = ""


def _read_classes_file(root: Path) -> tuple[list[str], list[str], list[str] | None] | None:
    """(folders, names, prompts or None) from DIR/classes.json or DIR/classes.txt, or None."""
    for name in CLASS_FILES:
        path = root / name
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc
        if name.endswith(".json"):
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise DataError(f"{path} is not valid JSON ({exc})") from exc
            if not isinstance(data, dict) or not data:
                raise DataError(f"{path} must map folder -> name or folder -> {{'name', 'prompt'}}; got {type(data).__name__}")
            folders, names, prompts = [], [], []
            for folder, entry in data.items():
                if isinstance(entry, str):
                    entry = {"name": entry}
                if not isinstance(entry, dict) or not isinstance(entry.get("name", folder), str):
                    raise DataError(f"{path}: entry {folder!r} is {entry!r}; allowed: a name or {{'name': ..., 'prompt': ...}}")
                folders.append(folder)
                names.append(entry.get("name", folder))
                prompts.append(entry.get("prompt"))
            has = [p is not None for p in prompts]
            if any(has) and not all(has):
                raise DataError(f"{path}: some classes have a prompt and some do not; allowed: all or none")
            return folders, names, prompts if all(has) else None
        rows = [line.split(None, 1) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if not rows:
            raise DataError(f"{path} lists no classes; allowed: one '<folder> <name>' per line")
        return [r[0] for r in rows], [(r[1] if len(r) > 1 else r[0]).strip() for r in rows], None
    return None


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path, resolution: int, channels: int = 3) -> np.ndarray:
    """One image file -> uint8 ``[channels, resolution, resolution]`` (resize shorter side, centre crop)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in EIGHT_BIT_MODES:
                raise DataError(f"{path} has image mode {image.mode!r} (16-bit or float); allowed: 8-bit images "
                                "(greyscale, palette, RGB, RGBA, CMYK)")
            image = image.convert("L" if channels == 1 else "RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {str(exc).splitlines()[0][:200]}; allowed: "
                        f"{', '.join(s[1:] for s in IMAGE_SUFFIXES)} files Pillow can open") from None
    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    image = image.resize(size, Image.BICUBIC, reducing_gap=None)
    left, top = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.array(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _round_robin(per_class: list[list[Path]]) -> list[tuple[int, Path]]:
    order, depth = [], max(len(files) for files in per_class)
    for i in range(depth):
        order += [(label, files[i]) for label, files in enumerate(per_class) if i < len(files)]
    return order


@dataclass(frozen=True)
class FolderScan:
    """The classes and files of an image folder, found without reading any image."""

    root: Path
    folders: list[str]
    names: list[str]
    prompts: list[str] | None
    files: list[list[Path]]


def scan_image_folder(root: str | os.PathLike) -> FolderScan:
    """Check the layout (class folders, classes file, at least one image per class); cheap, so the
    CLI runs it before loading a model."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"--data {str(root)!r} is not a folder; allowed: an image folder (one sub-folder per class), "
                        "fmnist-test | fmnist-train, or an .npz")
    listed = _read_classes_file(root)
    if listed is None:
        folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        names, prompts = [f.replace("_", " ") for f in folders], None
    else:
        folders, names, prompts = listed
        missing = [f for f in folders if not (root / f).is_dir()]
        if missing:
            raise DataError(f"{root}: the classes file lists folders {missing[:5]} that do not exist")
    if not folders:
        raise DataError(f"{root} has no class sub-folders; allowed layout: {root}/<class>/<image files>")
    files = [list_images(root / f) for f in folders]
    if not any(files):
        raise DataError(f"{root} has no images in its class sub-folders (looked for {', '.join(IMAGE_SUFFIXES)})")
    empty = [f for f, found in zip(folders, files) if not found]
    if empty:
        raise DataError(f"{root}: class folder(s) {empty[:5]} hold no images ({', '.join(IMAGE_SUFFIXES)}); "
                        "remove them or add images")
    return FolderScan(root, folders, names, prompts, files)


def load_image_folder(
    root: str | os.PathLike,
    resolution: int,
    *,
    channels: int = 3,
    limit: int | None = None,
    progress: bool = True,
) -> LabeledImages:
    """Read a class-per-sub-folder image folder at the model's resolution (see the module docstring)."""
    scan = scan_image_folder(root)
    if limit is not None and limit < 1:
        raise DataError(f"--limit {limit} is not allowed; allowed: an integer >= 1")
    order = _round_robin(scan.files)[:limit]
    images = torch.empty((len(order), channels, resolution, resolution), dtype=torch.float32)
    for i, (_, path) in enumerate(tqdm(order, desc=f"reading {scan.root.name}", unit="img", disable=not progress, leave=False)):
        images[i] = torch.from_numpy(read_image(path, resolution, channels)).float() / 127.5 - 1.0
    labels = torch.tensor([label for label, _ in order], dtype=torch.long)
    return LabeledImages(images, labels, scan.names, scan.prompts, pixels=True, source=str(scan.root))


def load_images(root: str | os.PathLike, resolution: int, *, channels: int = 3, progress: bool = True) -> torch.Tensor:
    """Every image under ``root`` (recursively, sorted) -> ``[N, C, R, R]`` in [-1, 1]: FID references."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"--fid-ref {str(root)!r} is not a folder of images")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if len(paths) < 2:
        raise DataError(f"--fid-ref {root} holds {len(paths)} images ({', '.join(IMAGE_SUFFIXES)}); allowed: at least 2")
    images = torch.empty((len(paths), channels, resolution, resolution), dtype=torch.float32)
    for i, path in enumerate(tqdm(paths, desc=f"reading {root.name}", unit="img", disable=not progress, leave=False)):
        images[i] = torch.from_numpy(read_image(path, resolution, channels)).float() / 127.5 - 1.0
    return images
