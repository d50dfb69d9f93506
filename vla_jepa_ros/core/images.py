"""Camera image checks, decoding and resizing (numpy + OpenCV; no ROS types).

Every function raises `ImageError` (a ValueError) whose message names the bad value and the limit, so the
policy node can count the frame as bad, warn (throttled) and skip it.
"""
from __future__ import annotations

import cv2
import numpy as np

MAX_SIDE_PX = 8192
RAW_ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")


class ImageError(ValueError):
    """A frame that cannot be used; the message says why."""


def check_size(width_px: int, height_px: int, expected_wh_px: tuple[int, int] | None = None) -> None:
    """Reject empty or absurd sizes, and sizes other than `expected_wh_px` (width, height) when given."""
    if width_px <= 0 or height_px <= 0:
        raise ImageError(f"empty image {width_px}x{height_px}")
    if width_px > MAX_SIDE_PX or height_px > MAX_SIDE_PX:
        raise ImageError(f"image {width_px}x{height_px} exceeds the maximum side {MAX_SIDE_PX} px")
    if expected_wh_px is not None and (width_px, height_px) != tuple(expected_wh_px):
        raise ImageError(f"wrong size {width_px}x{height_px}, expected {expected_wh_px[0]}x{expected_wh_px[1]}")


def raw_to_rgb(data: bytes | np.ndarray, width_px: int, height_px: int, step_bytes: int, encoding: str,
               expected_wh_px: tuple[int, int] | None = None) -> np.ndarray:
    """Raw pixel buffer (rgb8, bgr8, rgba8, bgra8, mono8) -> (H, W, 3) uint8 RGB (a view for rgb8)."""
    channels = RAW_ENCODINGS.get(encoding)
    if channels is None:
        raise ImageError(f"unsupported encoding {encoding!r} (supported: {', '.join(RAW_ENCODINGS)})")
    check_size(width_px, height_px, expected_wh_px)
    row_bytes = width_px * channels
    if step_bytes < row_bytes:
        raise ImageError(f"step {step_bytes} < width*channels {row_bytes} ({encoding})")
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    need = step_bytes * height_px
    if buf.size < need:
        raise ImageError(f"truncated data: {buf.size} bytes, expected step*height = {need}")
    img = buf[:need].reshape(height_px, step_bytes)[:, :row_bytes].reshape(height_px, width_px, channels)
    if encoding == "rgb8":
        return img
    if encoding == "mono8":
        return np.repeat(img, 3, axis=2)
    return img[:, :, :3] if encoding == "rgba8" else img[:, :, 2::-1]  # bgr8 / bgra8: reverse the colour channels


def compressed_format(format_field: str) -> str:
    """sensor_msgs/CompressedImage.format ("jpeg", "png", "rgb8; jpeg compressed bgr8", ...) -> "jpeg" | "png"."""
    f = format_field.lower()
    if "png" in f:
        return "png"
    if "jpeg" in f or "jpg" in f:
        return "jpeg"
    raise ImageError(f"unsupported compressed format {format_field!r} (supported: jpeg, png)")


def decode_compressed(data: bytes | np.ndarray, format_field: str,
                      expected_wh_px: tuple[int, int] | None = None) -> np.ndarray:
    """JPEG/PNG bytes -> (H, W, 3) uint8 RGB. Undecodable or truncated data raises ImageError."""
    fmt = compressed_format(format_field)
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    if buf.size == 0:
        raise ImageError(f"empty {fmt} payload")
    magic = {"jpeg": b"\xff\xd8", "png": b"\x89PNG"}[fmt]
    if buf[:len(magic)].tobytes() != magic:
        raise ImageError(f"undecodable {fmt}: payload does not start with the {fmt} signature "
                         f"({buf[:4].tobytes()!r})")
    if fmt == "jpeg" and buf[-2:].tobytes() != b"\xff\xd9":
        # OpenCV decodes a cut JPEG with a grey tail and only a warning: treat it as truncated instead.
        raise ImageError(f"truncated jpeg: {buf.size} bytes without the end-of-image marker")
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f"undecodable {fmt} ({buf.size} bytes)")
    check_size(bgr.shape[1], bgr.shape[0], expected_wh_px)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 95) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG/PNG bytes (for tests, the sim and recording)."""
    check_rgb(rgb)
    ext = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}.get(fmt)
    if ext is None:
        raise ImageError(f"unsupported format {fmt!r} (supported: jpeg, png)")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else []
    ok, out = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageError(f"OpenCV could not encode a {rgb.shape} image as {fmt}")
    return out.tobytes()


def check_rgb(img: np.ndarray) -> np.ndarray:
    """Accept only (H, W, 3) uint8 arrays."""
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        shape = getattr(img, "shape", None)
        dtype = getattr(img, "dtype", type(img).__name__)
        raise ImageError(f"expected an (H, W, 3) uint8 RGB image, got shape {shape} dtype {dtype}")
    check_size(img.shape[1], img.shape[0])
    return img


def resize_rgb(img: np.ndarray, size_px: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size_px, size_px, 3) uint8; INTER_AREA when shrinking (as the reference
    deployment does), INTER_LINEAR when enlarging. Non-square frames are stretched, like the reference."""
    check_rgb(img)
    if size_px <= 0:
        raise ImageError(f"target size {size_px} px must be > 0")
    h, w = img.shape[:2]
    if (h, w) == (size_px, size_px):
        return img
    interp = cv2.INTER_AREA if (h > size_px or w > size_px) else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(img), (size_px, size_px), interpolation=interp)


def to_model_input(images: list[np.ndarray], size_px: int) -> np.ndarray:
    """V RGB frames -> (1, V, 3, size_px, size_px) float32 in [0, 1] (the exported graph's `images`)."""
    out = np.empty((1, len(images), 3, size_px, size_px), dtype=np.float32)
    for v, img in enumerate(images):
        out[0, v] = resize_rgb(img, size_px).transpose(2, 0, 1)  # (3, S, S)
    out *= np.float32(1.0 / 255.0)
    return out


def area_resize_matrix(src_px: int, dst_px: int) -> np.ndarray:
    """(dst_px, src_px) float64 weights of a 1-D area-average shrink, the separable half of `resize_rgb`'s
    INTER_AREA: output pixel i averages source pixels [i * s, (i + 1) * s), s = src_px / dst_px, each weighted by
    how much of it lies inside. `Wy @ frame @ Wx.T` then reproduces the resize as two matrix products, which is
    how a backend resizes on its own device (to within 1/255 of OpenCV after rounding)."""
    if not 0 < dst_px <= src_px:
        raise ImageError(f"area resize needs 0 < dst_px={dst_px} <= src_px={src_px} (it only shrinks)")
    scale = src_px / dst_px
    edges = np.arange(dst_px + 1) * scale  # output pixel i covers [edges[i], edges[i + 1]) in source pixels
    left = np.arange(src_px)
    overlap = (np.minimum(edges[1:, None], left[None, :] + 1) - np.maximum(edges[:-1, None], left[None, :]))
    return np.clip(overlap, 0.0, None) / scale


def device_resize_matrices(height_px: int, width_px: int, size_px: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(Wy (S, H), Wx (S, W)) float32 with `Wy @ frame @ Wx.T` == resize_rgb(frame, S) (to 1/255), or None when
    resize_rgb would enlarge either side (INTER_LINEAR: resize on the host)."""
    if height_px < size_px or width_px < size_px:
        return None
    return (area_resize_matrix(height_px, size_px).astype(np.float32),
            area_resize_matrix(width_px, size_px).astype(np.float32))

