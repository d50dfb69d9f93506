"""What people look at after an episode: a captioned image strip and an H.264 video of the camera frames.

Used by `vla-jepa demo`, `collect`, `eval` and the LIBERO harness. Videos go through PyAV (a dependency of both
venvs), imageio as a fallback."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

CAPTION_PX = 18  # height of one caption line


def caption(image: np.ndarray, text: str, top: bool = True) -> np.ndarray:
    """(H, W, 3) uint8 RGB with one line of text on a dark band above (or below) it -> (H + CAPTION_PX, W, 3)."""
    band = np.full((CAPTION_PX, image.shape[1], 3), 32, np.uint8)
    scale = 0.4 if image.shape[1] >= 160 else 0.3
    cv2.putText(band, text, (4, CAPTION_PX - 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (235, 235, 235), 1, cv2.LINE_AA)
    return np.concatenate([band, image] if top else [image, band], axis=0)


def save_strip(frames: list[np.ndarray], times_s: list[float], path: str | Path, title: str = "",
               max_frames: int = 10) -> Path | None:
    """Up to `max_frames` frames spread evenly over the episode, side by side, each captioned with its time since
    the first frame, under a `title` line (instruction, outcome). frames: (H, W, 3) uint8 RGB. None when empty."""
    if not frames:
        return None
    if len(times_s) != len(frames):
        raise ValueError(f"{len(frames)} frames but {len(times_s)} times")
    idx = np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
    t0 = times_s[0]
    strip = np.concatenate([caption(frames[i], f"t = {times_s[i] - t0:.1f} s", top=False) for i in idx], axis=1)
    if title:
        strip = caption(strip, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), strip[:, :, ::-1])
    return path


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
