"""How far `trainers.policies`' ops are from torchvision.transforms.v2's, on real images.

For each op and a few magnitudes (the calls torchvision's AutoAugment, RandAugment and
TrivialAugmentWide make, NEAREST, fill 0), the share of pixels that differ and the
largest difference, against torchvision on uint8 tensors and on PIL images.

torchvision does not import beside the project's CPU build of torch, so this runs in a
separate environment that has it (on x86_64: ``pip install torch==2.14.1
torchvision==0.29.1 numpy pillow``), from the repository root:

    PYTHONPATH=. /path/to/venv/bin/python benchmarks/torchvision_parity.py [--data ARCHIVE]

Writes benchmarks/results/torchvision-parity-<date>.json.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from record import save

from trainers.data import load_cifar10
from trainers.policies import OP, apply_ops

CASES = [("shear_x", 0.3), ("shear_x", -0.99), ("shear_y", 0.21), ("translate_x", 9.0),
         ("translate_y", -14.5), ("rotate", 17.3), ("rotate", 90.0), ("rotate", -45.0),
         ("brightness", -0.5), ("brightness", 0.7), ("color", -0.9), ("color", 0.66),
         ("contrast", -0.4), ("contrast", 0.9), ("sharpness", -0.8), ("sharpness", 0.99),
         ("posterize", 2), ("posterize", 5), ("solarize", 128.0), ("solarize", 246.5),
         ("autocontrast", 0.0), ("equalize", 0.0), ("invert", 0.0)]


def torchvision_op(name: str, m: float) -> Callable[[Any], Any]:
    """The call torchvision's policies make for ``name`` at magnitude ``m``."""
    import torchvision.transforms.v2.functional as F
    from torchvision.transforms import InterpolationMode

    nearest = InterpolationMode.NEAREST
    calls: dict[str, Callable[[Any], Any]] = {
        "shear_x": lambda im: F.affine(im, angle=0.0, translate=[0, 0], scale=1.0,
                                       shear=[math.degrees(math.atan(m)), 0.0],
                                       interpolation=nearest, fill=0, center=[0, 0]),
        "shear_y": lambda im: F.affine(im, angle=0.0, translate=[0, 0], scale=1.0,
                                       shear=[0.0, math.degrees(math.atan(m))],
                                       interpolation=nearest, fill=0, center=[0, 0]),
        "translate_x": lambda im: F.affine(im, angle=0.0, translate=[int(m), 0], scale=1.0,
                                           shear=[0.0, 0.0], interpolation=nearest, fill=0),
        "translate_y": lambda im: F.affine(im, angle=0.0, translate=[0, int(m)], scale=1.0,
                                           shear=[0.0, 0.0], interpolation=nearest, fill=0),
        "rotate": lambda im: F.rotate(im, m, interpolation=nearest, fill=0),
        "brightness": lambda im: F.adjust_brightness(im, 1.0 + m),
        "color": lambda im: F.adjust_saturation(im, 1.0 + m),
        "contrast": lambda im: F.adjust_contrast(im, 1.0 + m),
        "sharpness": lambda im: F.adjust_sharpness(im, 1.0 + m),
        "posterize": lambda im: F.posterize(im, int(m)),
        "solarize": lambda im: F.solarize(im, m),
        "autocontrast": F.autocontrast, "equalize": F.equalize, "invert": F.invert,
    }
    return calls[name]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/cifar10-jpeg.tar.gz")
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    import torchvision
    from PIL import Image

    with tempfile.TemporaryDirectory() as cache:
        images = load_cifar10(args.data, cache_dir=cache).test_images[:args.images]
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    rows = []
    print(f"{'op':<13}{'magnitude':>10}  {'tensor: differ':>15} {'max':>4}  "
          f"{'PIL: differ':>12} {'max':>4}")
    for name, m in CASES:
        n = len(x)
        ours = apply_ops(x, torch.full((n,), OP[name]), torch.full((n,), float(m),
                                                                 dtype=torch.float64))
        call = torchvision_op(name, m)
        tensor = call(x)
        pil = torch.from_numpy(np.stack([np.asarray(call(Image.fromarray(image)))
                                         for image in images])).permute(0, 3, 1, 2)
        row: dict[str, Any] = {"op": name, "magnitude": m}
        for kind, theirs in (("tensor", tensor), ("pil", pil)):
            diff = (ours.int() - theirs.int()).abs()
            row[f"{kind}_pixels_differ"] = round(diff.amax(1).gt(0).float().mean().item(), 5)
            row[f"{kind}_max_diff"] = int(diff.max())
        rows.append(row)
        print(f"{name:<13}{m:>10g}  {row['tensor_pixels_differ']:>14.2%} "
              f"{row['tensor_max_diff']:>4}  {row['pil_pixels_differ']:>11.2%} "
              f"{row['pil_max_diff']:>4}", flush=True)
    save("torchvision_parity", "torchvision-parity", {"images": len(x), "rows": rows},
         torch=torch.__version__, torchvision=torchvision.__version__)
    return 0


if __name__ == "__main__":
    sys.exit(main())
