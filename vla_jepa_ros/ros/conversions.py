"""Message <-> numpy/core conversions. No maths beyond reshaping; errors name the bad value."""
from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image

from vla_jepa_interfaces.msg import ActionChunk as ActionChunkMsg

from ..core.images import ImageError, raw_to_rgb  # noqa: F401  (ImageError re-exported)
from ..core.types import ActionChunk


def stamp_to_s(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def s_to_stamp(t_s: float) -> Time:
    sec = int(np.floor(t_s))
    return Time(sec=sec, nanosec=min(int(round((t_s - sec) * 1e9)), 999_999_999))


def image_to_rgb(msg: Image, expected_wh_px: tuple[int, int] | None = None) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB (zero-copy for rgb8). Raises core.images.ImageError."""
    return raw_to_rgb(msg.data, msg.width, msg.height, msg.step, msg.encoding, expected_wh_px)


def rgb_to_image(rgb: np.ndarray, stamp_s: float, frame_id: str) -> Image:
    """(H, W, 3) uint8 RGB -> sensor_msgs/Image rgb8."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    msg = Image()
    msg.header.stamp = s_to_stamp(stamp_s)
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(rgb.shape[0]), int(rgb.shape[1])
    msg.encoding = "rgb8"
    msg.step = msg.width * 3
    msg.data = array.array("B", np.ascontiguousarray(rgb).tobytes())
    return msg


def chunk_to_msg(chunk: ActionChunk) -> ActionChunkMsg:
    msg = ActionChunkMsg()
    msg.header.stamp = s_to_stamp(chunk.stamp_s)
    msg.task_id = chunk.task_id
    msg.sequence = int(chunk.sequence)
    msg.horizon = chunk.horizon
    msg.action_dim = chunk.action_dim
    msg.step_period_s = float(chunk.step_period_s)
    msg.action_space = chunk.action_space
    msg.dim_names = list(chunk.dim_names)
    msg.data = array.array("f", np.ascontiguousarray(chunk.actions, dtype=np.float32).tobytes())
    msg.inference_ms = float(chunk.inference_ms)
    msg.model_id = chunk.model_id
    return msg


def msg_to_chunk(msg: ActionChunkMsg) -> ActionChunk:
    """ActionChunk message -> core ActionChunk. Raises ValueError when sizes disagree."""
    data = np.asarray(msg.data, dtype=np.float32)
    if data.size != msg.horizon * msg.action_dim:
        raise ValueError(f"chunk data has {data.size} values, expected horizon*action_dim = "
                         f"{msg.horizon}*{msg.action_dim} = {msg.horizon * msg.action_dim}")
    return ActionChunk(actions=data.reshape(msg.horizon, msg.action_dim), step_period_s=msg.step_period_s,
                       dim_names=tuple(msg.dim_names), action_space=msg.action_space,
                       stamp_s=stamp_to_s(msg.header.stamp), task_id=msg.task_id, sequence=msg.sequence,
                       inference_ms=msg.inference_ms, model_id=msg.model_id)


def object_poses_to_dict(msg) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """vla_jepa_interfaces/ObjectPoses -> {name: (position (3,) m, quaternion xyzw (4,))}."""
    return {n: (np.array([p.position.x, p.position.y, p.position.z]),
                np.array([p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w]))
            for n, p in zip(msg.names, msg.poses)}
