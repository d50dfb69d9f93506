"""Rotation maths shared by the safety envelope, the controller and the expert (numpy only).

Conventions: rpy are extrinsic XYZ angles (roll about base x, then pitch about base y, then yaw about base z),
so R = Rz(yaw) @ Ry(pitch) @ Rx(roll). Quaternions are (x, y, z, w), as ROS and franky use them.
"""
from __future__ import annotations

import numpy as np


def rpy_to_matrix(rpy: np.ndarray) -> np.ndarray:
    """(3,) extrinsic XYZ angles (rad) -> (3, 3) rotation matrix."""
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])


def matrix_to_rpy(m: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> (3,) extrinsic XYZ angles (rad), pitch in [-pi/2, pi/2]."""
    sp = -float(np.clip(m[2, 0], -1.0, 1.0))
    pitch = np.arcsin(sp)
    if abs(sp) < 1.0 - 1e-9:
        roll = np.arctan2(m[2, 1], m[2, 2])
        yaw = np.arctan2(m[1, 0], m[0, 0])
    else:  # gimbal lock: put everything into yaw
        roll = 0.0
        yaw = np.arctan2(-m[0, 1], m[1, 1])
    return np.array([roll, pitch, yaw])


def quat_to_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    """(4,) quaternion (x, y, z, w), normalised here -> (3, 3) rotation matrix."""
    x, y, z, w = np.asarray(q_xyzw, dtype=float) / np.linalg.norm(q_xyzw)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> (4,) unit quaternion (x, y, z, w) with w >= 0."""
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = np.sqrt(tr + 1.0) * 2
        q = np.array([(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s])
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = np.array([0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s])
    elif m[1, 1] > m[2, 2]:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = np.array([(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s])
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = np.array([(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s])
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def quat_wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    """MuJoCo's (w, x, y, z) -> (x, y, z, w)."""
    return np.array([q[1], q[2], q[3], q[0]], dtype=float)


def rotvec_to_matrix(v: np.ndarray) -> np.ndarray:
    """(3,) rotation vector (axis * angle, rad) -> (3, 3) rotation matrix (Rodrigues)."""
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    k = np.asarray(v, dtype=float) / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def matrix_to_rotvec(m: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> (3,) rotation vector (axis * angle, angle in [0, pi])."""
    cos = float(np.clip((np.trace(m) - 1.0) / 2.0, -1.0, 1.0))
    angle = np.arccos(cos)
    if angle < 1e-9:
        return np.zeros(3)
    if np.pi - angle < 1e-6:  # near pi: axis from the diagonal
        axis = np.sqrt(np.maximum((np.diag(m) + 1.0) / 2.0, 0.0))
        i = int(np.argmax(axis))
        axis[(i + 1) % 3] = np.copysign(axis[(i + 1) % 3], m[i, (i + 1) % 3])
        axis[(i + 2) % 3] = np.copysign(axis[(i + 2) % 3], m[i, (i + 2) % 3])
        return axis / np.linalg.norm(axis) * angle
    axis = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]]) / (2 * np.sin(angle))
    return axis * angle


def rotation_angle(m: np.ndarray) -> float:
    """Angle (rad, in [0, pi]) of a rotation matrix."""
    return float(np.arccos(np.clip((np.trace(m) - 1.0) / 2.0, -1.0, 1.0)))


def wrap_angle(a: float) -> float:
    """Wrap an angle to (-pi, pi]."""
    return float(-((-a + np.pi) % (2 * np.pi) - np.pi))
