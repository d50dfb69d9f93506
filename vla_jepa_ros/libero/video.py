"""Episode videos: H.264 mp4 through PyAV (installed in .venv-libero), imageio as a fallback."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_video(path: str | Path, frames: list[np.ndarray], fps: int = 20) -> str:
    """frames: (H, W, 3) uint8 RGB, all the same size (even sides are padded in) -> path of the mp4."""
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    h, w = frames[0].shape[:2]
    if any(f.shape != frames[0].shape or f.dtype != np.uint8 for f in frames):
        raise ValueError(f"{path}: frames differ in shape/dtype (first {frames[0].shape} {frames[0].dtype})")
    ph, pw = h + h % 2, w + w % 2  # yuv420p needs even sides
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import av
    except ImportError:
        import imageio.v2 as imageio  # noqa: PLC0415 - fallback only

        imageio.mimwrite(path, [_pad(f, ph, pw) for f in frames], fps=fps)
        return str(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(_pad(f, ph, pw), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


def _pad(f: np.ndarray, h: int, w: int) -> np.ndarray:
    if f.shape[:2] == (h, w):
        return np.ascontiguousarray(f)
    out = np.zeros((h, w, 3), np.uint8)
    out[:f.shape[0], :f.shape[1]] = f
    return out
