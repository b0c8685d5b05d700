"""PIL-based ``resize`` and ``to_pil_image``, as torchvision applies them to PIL images."""

import numpy as np
from PIL import Image


def to_pil_image(pic):
    """An (H, W, C) uint8 numpy array (what SAM's ResizeLongestSide passes) as a PIL image."""
    arr = np.asarray(pic)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    return Image.fromarray(arr)


def resize(img, size, interpolation=None, max_size=None, antialias=True):
    """Resize a PIL image to ``size`` = (h, w) with bilinear interpolation (torchvision's
    default for PIL input)."""
    h, w = size
    return img.resize((w, h), Image.BILINEAR)
