"""Runtime-side image preparation that matches training exactly (numpy + OpenCV, no torch).

Training resizes every camera frame with cv2 INTER_AREA to `image_size` (aspect ratio not kept, like the public
code) and the model divides by 255 and applies the VLM mean/std inside its graph. So a runtime does:

    images = prepare_images([front_rgb, wrist_rgb], cfg.image_size)   # (1, V, 3, S, S) float32 in [0, 1]
"""

from __future__ import annotations

import cv2
import numpy as np


def prepare_images(frames: list[np.ndarray], image_size: int) -> np.ndarray:
    """V camera frames (H, W, 3) uint8 RGB -> (1, V, 3, image_size, image_size) float32 in [0, 1]."""
    out = []
    for i, f in enumerate(frames):
        f = np.asarray(f)
        if f.ndim != 3 or f.shape[-1] != 3 or f.dtype != np.uint8:
            raise ValueError(f"camera {i}: expected (H, W, 3) uint8 RGB, got {f.dtype} {f.shape}")
        if f.shape[:2] != (image_size, image_size):
            f = cv2.resize(f, (image_size, image_size), interpolation=cv2.INTER_AREA)
        out.append(f.transpose(2, 0, 1))
    return (np.stack(out)[None].astype(np.float32) / 255.0)
