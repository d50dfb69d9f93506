"""Data: episode sources (native format, LeRobot v2.1/v3, synthetic), human-video folders, sample datasets.

Native episode dataset (what the bag converter writes with `write_episode_dataset`):
    root/meta.json
        {"format": "vla_jepa_episodes", "version": 1, "cameras": ["front", "wrist"], "image_height": H,
         "image_width": W, "fps": 10.0, "state_dim": 8, "action_dim": 7, "action_space": "franka_delta_ee",
         "episodes": [{"file": "episode_000000.npz", "length": T, "instruction": "pick up the cube"}, ...]}
    root/episode_XXXXXX.npz   frames uint8 (T, V, H, W, 3) RGB, state float32 (T, 8), actions float32 (T, 7),
                              optionally objects float32 (T, N, 3): positions of the N objects meta["objects"]
                              names (simulation ground truth, for the auxiliary object loss)
    root/dataset_statistics.json   normalisation stats (normalize.compute_stats over all actions)
Action t is the command applied after observing frame t; gripper 1 = open.

Robot sample at (episode, t): images = frame t of every camera; video = frames t..t+7 of the two world-model
cameras (indices clamped at the episode end); actions = a_t..a_{t+6} (clamped); state = s_t; the instruction.
Frames are RGB everywhere.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol

import cv2
import numpy as np
import torch

from .config import VLAJEPAConfig
from .normalize import compute_stats, normalize_actions, save_stats
from .prompt import PromptLayout, encode_with_layout

FORMAT_NAME = "vla_jepa_episodes"


class DataError(ValueError):
    """Bad or missing data; the message names the file and the problem."""


@dataclass
class Episode:
    frames: np.ndarray  # (T, V, H, W, 3) uint8 RGB
    states: np.ndarray  # (T, S) float32
    actions: np.ndarray  # (T, A) float32
    instruction: str
    objects: np.ndarray | None = None  # (T, N, 3) float32 object positions (m), or None
    object_names: tuple[str, ...] = ()  # the N names, in the order of `objects`

    def validate(self, where: str) -> None:
        f, s, a = self.frames, self.states, self.actions
        if f.ndim != 5 or f.shape[-1] != 3 or f.dtype != np.uint8:
            raise DataError(f"{where}: frames must be uint8 (T, V, H, W, 3), got {f.dtype} {f.shape}")
        if s.ndim != 2 or a.ndim != 2:
            raise DataError(f"{where}: state/actions must be 2-D (T, D), got {s.shape} and {a.shape}")
        if not len(f) == len(s) == len(a):
            raise DataError(f"{where}: lengths differ: frames {len(f)}, state {len(s)}, actions {len(a)}")
        if len(f) < 1:
            raise DataError(f"{where}: empty episode")
        if not (np.isfinite(s).all() and np.isfinite(a).all()):
            raise DataError(f"{where}: state or actions contain NaN/inf")
        o = self.objects
        if o is not None and (o.ndim != 3 or o.shape[0] != len(f) or o.shape[2] != 3
                              or o.shape[1] != len(self.object_names) or not np.isfinite(o).all()):
            raise DataError(f"{where}: objects must be finite (T={len(f)}, N={len(self.object_names)}, 3), "
                            f"got {o.shape}")


class EpisodeSource(Protocol):
    """Anything that yields episodes: native folders, LeRobot datasets, synthetic generators."""

    def __len__(self) -> int: ...

    def episode_length(self, i: int) -> int: ...

    def load(self, i: int) -> Episode: ...


# ------------------------------------------------------------------------------------------------ native format


def write_episode_dataset(root: str | Path, episodes: Iterable[Episode], cameras: list[str], fps: float,
                          action_space: str = "franka_delta_ee", overwrite: bool = False) -> Path:
    """Write episodes in the native format (+ dataset_statistics.json). Returns the root path."""
    root = Path(root)
    if (root / "meta.json").exists() and not overwrite:
        raise FileExistsError(f"{root / 'meta.json'} exists; pass overwrite=True")
    root.mkdir(parents=True, exist_ok=True)
    metas, all_actions, all_states, all_objects, shape = [], [], [], [], None
    object_names = None  # names of the first episode; every episode must have the same to keep positions
    for i, ep in enumerate(episodes):
        name = f"episode_{i:06d}.npz"
        ep.validate(str(root / name))
        if ep.frames.shape[1] != len(cameras):
            raise DataError(f"{root / name}: {ep.frames.shape[1]} views but cameras={cameras}")
        if shape is None:
            shape = ep.frames.shape[2:4]
        elif ep.frames.shape[2:4] != shape:
            raise DataError(f"{root / name}: image size {ep.frames.shape[2:4]} differs from {shape}")
        if object_names is None:
            object_names = tuple(ep.object_names) if ep.objects is not None else ()
        if (tuple(ep.object_names) if ep.objects is not None else ()) != object_names:
            raise DataError(f"{root / name}: objects {ep.object_names if ep.objects is not None else None} differ "
                            f"from the first episode's {object_names or None}")
        arrays = {"objects": ep.objects.astype(np.float32)} if object_names else {}
        np.savez(root / name, frames=ep.frames, state=ep.states.astype(np.float32),
                 actions=ep.actions.astype(np.float32), **arrays)
        if object_names:
            all_objects.append(ep.objects.reshape(len(ep.objects), -1))
        metas.append({"file": name, "length": int(len(ep.frames)), "instruction": ep.instruction})
        all_actions.append(ep.actions)
        all_states.append(ep.states)
    if not metas:
        raise DataError(f"{root}: no episodes to write")
    meta = {"format": FORMAT_NAME, "version": 1, "cameras": list(cameras), "image_height": int(shape[0]),
            "image_width": int(shape[1]), "fps": float(fps), "state_dim": int(all_states[0].shape[1]),
            "action_dim": int(all_actions[0].shape[1]), "action_space": action_space, "episodes": metas}
    if object_names:
        meta["objects"] = object_summary(object_names, all_objects)
    (root / "meta.json").write_text(json.dumps(meta, indent=2))
    save_stats(compute_stats(np.concatenate(all_actions), np.concatenate(all_states), len(metas)),
               root / "dataset_statistics.json")
    return root


def object_summary(names: tuple[str, ...], positions: list[np.ndarray]) -> dict:
    """names (N,), positions: per episode (T, N, 3) or (T, N * 3) -> {"names", "mean_m", "std_m"} ((N, 3) lists)."""
    flat = np.concatenate([p.reshape(len(p), -1) for p in positions]).astype(np.float64)  # (sum T, N * 3)
    return {"names": list(names), "mean_m": flat.mean(0).reshape(-1, 3).tolist(),
            "std_m": flat.std(0).reshape(-1, 3).tolist()}


def source_objects(source) -> dict | None:
    """The {"names", "mean_m", "std_m"} of the object positions a source carries (native or in-memory), or None."""
    return (getattr(source, "meta", None) or {}).get("objects")


class NativeEpisodeSource:
    """Reads the native format written by `write_episode_dataset`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.exists():
            raise DataError(f"{meta_path}: missing (not a native episode dataset)")
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{meta_path}: invalid JSON ({e})") from e
        if self.meta.get("format") != FORMAT_NAME:
            raise DataError(f"{meta_path}: format {self.meta.get('format')!r} != {FORMAT_NAME!r}")
        for key in ("cameras", "episodes", "state_dim", "action_dim"):
            if key not in self.meta:
                raise DataError(f"{meta_path}: missing key {key!r}")
        self.cameras = self.meta["cameras"]

    def __len__(self) -> int:
        return len(self.meta["episodes"])

    def episode_length(self, i: int) -> int:
        return int(self.meta["episodes"][i]["length"])

    def actions_states(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(actions (T, A), states (T, S)) of episode i without decoding its frames (for statistics)."""
        with np.load(self.root / self.meta["episodes"][i]["file"]) as z:
            return z["actions"], z["state"]

    def load(self, i: int) -> Episode:
        info = self.meta["episodes"][i]
        path = self.root / info["file"]
        if not path.exists():
            raise DataError(f"{path}: episode file missing")
        try:
            with np.load(path) as z:
                names = tuple(self.meta["objects"]["names"]) if "objects" in self.meta else ()
                ep = Episode(z["frames"], z["state"], z["actions"], info["instruction"],
                             z["objects"] if names else None, names)
        except KeyError as e:
            raise DataError(f"{path}: missing array {e}") from e
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: unreadable ({e})") from e
        ep.validate(str(path))
        if len(ep.frames) != info["length"]:
            raise DataError(f"{path}: {len(ep.frames)} steps but meta.json says {info['length']}")
        if ep.actions.shape[1] != self.meta["action_dim"] or ep.states.shape[1] != self.meta["state_dim"]:
            raise DataError(f"{path}: actions/state dims {ep.actions.shape[1]}/{ep.states.shape[1]} != meta "
                            f"{self.meta['action_dim']}/{self.meta['state_dim']}")
        return ep


class ConcatEpisodeSource:
    """Several native datasets as one, in order (e.g. demonstrations + relabelled rollouts of a learned policy).
    They must share cameras, state and action dims; object positions are kept when all track the same objects
    (mean/std pooled over every step)."""

    def __init__(self, sources: list[NativeEpisodeSource]) -> None:
        if not sources:
            raise DataError("no datasets to concatenate")
        first = sources[0]
        for s in sources[1:]:
            for key in ("cameras", "state_dim", "action_dim", "image_height", "image_width"):
                if s.meta.get(key) != first.meta.get(key):
                    raise DataError(f"{s.root}: {key} {s.meta.get(key)} differs from {first.root}'s {first.meta.get(key)}")
        self.sources = list(sources)
        self.cameras = first.cameras
        self._where = [(s, i) for s in self.sources for i in range(len(s))]
        self.meta = {"cameras": first.cameras}
        infos = [source_objects(s) for s in self.sources]
        if all(infos) and all(info["names"] == infos[0]["names"] for info in infos):
            steps = np.array([sum(s.episode_length(i) for i in range(len(s))) for s in self.sources], np.float64)
            w = (steps / steps.sum())[:, None, None]
            mean = np.array([info["mean_m"] for info in infos])  # (sources, N, 3)
            std = np.array([info["std_m"] for info in infos])
            pooled = (w * mean).sum(0)
            var = (w * (std ** 2 + mean ** 2)).sum(0) - pooled ** 2
            self.meta["objects"] = {"names": infos[0]["names"], "mean_m": pooled.tolist(),
                                    "std_m": np.sqrt(np.maximum(var, 0.0)).tolist()}

    def __len__(self) -> int:
        return len(self._where)

    def episode_length(self, i: int) -> int:
        source, j = self._where[i]
        return source.episode_length(j)

    def actions_states(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        source, j = self._where[i]
        return source.actions_states(j)

    def load(self, i: int) -> Episode:
        source, j = self._where[i]
        return source.load(j)


# ------------------------------------------------------------------------------------------------ synthetic


def synthetic_episodes(num_episodes: int = 4, length: int = 24, num_views: int = 2, image_size: int = 96,
                       state_dim: int = 8, action_dim: int = 7, seed: int = 0) -> list[Episode]:
    """Deterministic toy episodes: a coloured square moves with the action; the instruction names its colour.

    Actions are learnable from the image (the square's offset to the centre) and the instruction.
    """
    rng = np.random.RandomState(seed)
    colours = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
    names = list(colours)
    eps = []
    for e in range(num_episodes):
        name = names[e % len(names)]
        pos = rng.uniform(0.2, 0.8, size=2)
        frames = np.zeros((length, num_views, image_size, image_size, 3), np.uint8)
        states = np.zeros((length, state_dim), np.float32)
        actions = np.zeros((length, action_dim), np.float32)
        objects = np.zeros((length, 1, 3), np.float32)  # the square's (x, y, 0)
        for t in range(length):
            delta = (0.5 - pos) * 0.2
            for v in range(num_views):
                img = np.full((image_size, image_size, 3), 90 + 40 * v, np.uint8)
                c = (pos * image_size).astype(int)
                r = max(2, image_size // 10)
                img[max(0, c[1] - r):c[1] + r, max(0, c[0] - r):c[0] + r] = colours[name]
                frames[t, v] = img
            states[t, :2] = pos
            objects[t, 0, :2] = pos
            actions[t, :2] = delta
            actions[t, 2] = 0.01 * (names.index(name) - 1)
            actions[t, 3:action_dim - 1] = 0.001 * np.arange(action_dim - 4)
            actions[t, -1] = 1.0 if t < length // 2 else 0.0
            pos = np.clip(pos + delta, 0.05, 0.95)
        eps.append(Episode(frames, states, actions, f"move the {name} square to the centre", objects, ("square",)))
    return eps


class InMemoryEpisodeSource:
    def __init__(self, episodes: list[Episode]) -> None:
        for i, ep in enumerate(episodes):
            ep.validate(f"episode {i}")
        self.episodes = episodes
        names = episodes[0].object_names if episodes and episodes[0].objects is not None else ()
        self.meta = {"objects": object_summary(names, [e.objects for e in episodes])} if names and all(
            e.objects is not None and e.object_names == names for e in episodes) else {}

    def __len__(self) -> int:
        return len(self.episodes)

    def episode_length(self, i: int) -> int:
        return len(self.episodes[i].frames)

    def load(self, i: int) -> Episode:
        return self.episodes[i]


# ------------------------------------------------------------------------------------------------ LeRobot


def decode_video(path: Path, start_s: float | None = None, end_s: float | None = None) -> np.ndarray:
    """Decode an mp4/webm with PyAV -> (T, H, W, 3) uint8 RGB (optionally only frames in [start_s, end_s))."""
    import av

    if not path.exists():
        raise DataError(f"{path}: video file missing")
    try:
        frames = []
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                ts = float(frame.pts * stream.time_base) if frame.pts is not None else None
                if start_s is not None and ts is not None and ts < start_s - 1e-4:
                    continue
                if end_s is not None and ts is not None and ts >= end_s - 1e-4:
                    break
                frames.append(frame.to_ndarray(format="rgb24"))
    except av.error.FFmpegError as e:  # type: ignore[attr-defined]
        raise DataError(f"{path}: cannot decode video ({e})") from e
    if not frames:
        raise DataError(f"{path}: no decodable frames")
    return np.stack(frames)


class LeRobotEpisodeSource:
    """Local LeRobot dataset (parquet + mp4), codebase v2.1 or v3.0.

    `cameras`: video feature keys in order (e.g. ["observation.images.front", "observation.images.wrist"]);
    default: every video feature. State/action columns: `state_key` / `action_key`.
    """

    def __init__(self, root: str | Path, cameras: list[str] | None = None, state_key: str = "observation.state",
                 action_key: str = "action") -> None:
        import pyarrow.parquet as pq

        self._pq = pq
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.exists():
            raise DataError(f"{info_path}: missing (not a LeRobot dataset)")
        self.info = json.loads(info_path.read_text())
        self.version = str(self.info.get("codebase_version", ""))
        feats = self.info.get("features", {})
        self.cameras = cameras or [k for k, v in feats.items() if v.get("dtype") == "video"]
        for key in self.cameras + [state_key, action_key]:
            if key not in feats:
                raise DataError(f"{info_path}: feature {key!r} not found; features: {sorted(feats)}")
        self.state_key, self.action_key = state_key, action_key
        if self.version.startswith("v2"):
            self._load_v2_meta()
        elif self.version.startswith("v3"):
            self._load_v3_meta()
        else:
            raise DataError(f"{info_path}: unsupported codebase_version {self.version!r} (need v2.1 or v3.0)")

    def _load_v2_meta(self) -> None:
        ep_path = self.root / "meta" / "episodes.jsonl"
        if not ep_path.exists():
            raise DataError(f"{ep_path}: missing")
        self.episodes = [json.loads(line) for line in ep_path.read_text().splitlines() if line.strip()]

    def _load_v3_meta(self) -> None:
        files = sorted((self.root / "meta" / "episodes").glob("*/*.parquet"))
        if not files:
            raise DataError(f"{self.root / 'meta' / 'episodes'}: no episode parquet files")
        rows = []
        for f in files:
            rows.extend(self._pq.read_table(f).to_pylist())
        self.episodes = sorted(rows, key=lambda r: r["episode_index"])

    def __len__(self) -> int:
        return len(self.episodes)

    def episode_length(self, i: int) -> int:
        return int(self.episodes[i]["length"])

    def _instruction(self, ep: dict) -> str:
        tasks = ep.get("tasks") or [""]
        return tasks[0] if isinstance(tasks, list) else str(tasks)

    def load(self, i: int) -> Episode:
        ep = self.episodes[i]
        idx = int(ep["episode_index"])
        fps = float(self.info["fps"])
        if self.version.startswith("v2"):
            chunk = idx // int(self.info.get("chunks_size", 1000))
            data_path = self.root / self.info["data_path"].format(episode_chunk=chunk, episode_index=idx)
            table = self._read_parquet(data_path)
            videos = [decode_video(self.root / self.info["video_path"].format(
                episode_chunk=chunk, video_key=k, episode_index=idx)) for k in self.cameras]
        else:
            data_path = self.root / self.info["data_path"].format(chunk_index=ep["data/chunk_index"],
                                                                  file_index=ep["data/file_index"])
            table = self._read_parquet(data_path)
            table = [r for r in table if int(r["episode_index"]) == idx]
            videos = []
            for k in self.cameras:
                vpath = self.root / self.info["video_path"].format(
                    video_key=k, chunk_index=ep[f"videos/{k}/chunk_index"], file_index=ep[f"videos/{k}/file_index"])
                start = float(ep[f"videos/{k}/from_timestamp"])
                videos.append(decode_video(vpath, start, start + len(table) / fps))
        n = len(table)
        if n == 0:
            raise DataError(f"{data_path}: no rows for episode {idx}")
        for k, v in zip(self.cameras, videos):
            if len(v) < n:
                raise DataError(f"video {k} of episode {idx}: {len(v)} frames < {n} parquet rows")
        frames = np.stack([v[:n] for v in videos], axis=1)
        states = np.asarray([r[self.state_key] for r in table], np.float32)
        actions = np.asarray([r[self.action_key] for r in table], np.float32)
        out = Episode(frames, states, actions, self._instruction(ep))
        out.validate(str(data_path))
        return out

    def _read_parquet(self, path: Path) -> list[dict]:
        if not path.exists():
            raise DataError(f"{path}: parquet file missing")
        try:
            return self._pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types
            raise DataError(f"{path}: unreadable parquet ({e})") from e


# ------------------------------------------------------------------------------------------------ human video


class VideoFolderSource:
    """Human videos (mp4/webm) + a `;`-separated label CSV with rows `id;label` (SSv2 style, optional header)."""

    def __init__(self, root: str | Path, labels_csv: str | Path | None = None) -> None:
        self.root = Path(root)
        csv_path = Path(labels_csv) if labels_csv else self.root / "labels.csv"
        if not csv_path.exists():
            raise DataError(f"{csv_path}: label CSV missing")
        files = {p.stem: p for p in sorted(self.root.iterdir()) if p.suffix.lower() in (".mp4", ".webm")}
        self.items: list[tuple[Path, str]] = []
        with open(csv_path, newline="") as f:
            for lineno, row in enumerate(csv.reader(f, delimiter=";"), 1):
                if not row or (lineno == 1 and row[0].strip().lower() in ("id", "video_id")):
                    continue
                if len(row) < 2:
                    raise DataError(f"{csv_path}:{lineno}: expected 'id;label', got {row!r}")
                vid = row[0].strip()
                if vid not in files:
                    raise DataError(f"{csv_path}:{lineno}: no video {vid}.mp4/.webm in {self.root}")
                self.items.append((files[vid], row[1].strip()))
        if not self.items:
            raise DataError(f"{csv_path}: no labelled videos")

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> tuple[np.ndarray, str]:
        path, label = self.items[i]
        return decode_video(path), label


# ------------------------------------------------------------------------------------------------ sample datasets


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """(..., H, W, 3) uint8 -> (..., size, size, 3) with INTER_AREA (aspect not kept, like the public code)."""
    flat = frames.reshape(-1, *frames.shape[-3:])
    if flat.shape[1] == size and flat.shape[2] == size:
        return frames
    out = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in flat])
    return out.reshape(*frames.shape[:-3], size, size, 3)


def actions_states(source: EpisodeSource, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(actions (T, A), states (T, S)) of episode i; without decoding its frames where the source can."""
    if hasattr(source, "actions_states"):
        return source.actions_states(i)
    ep = source.load(i)
    return ep.actions, ep.states


def idle_mask(actions: np.ndarray, xyz_threshold: float = 5e-4) -> np.ndarray:
    """(T, A) delta actions -> (T,) bool, False where the step is idle: |dxyz| < threshold and no gripper change
    (the public code drops such steps from the sample index)."""
    moving = np.abs(actions[:, :3]).max(axis=1) >= xyz_threshold
    grip_change = np.r_[False, np.diff((actions[:, -1] > 0.5).astype(int)) != 0]
    return moving | grip_change


def grasp_mask(actions: np.ndarray, window: int) -> np.ndarray:
    """(T, A) actions -> (T,) bool, True on the `window` steps up to and including each gripper close (the last
    action dim falling through 0.5): the approach and close that a grasp hangs on, a few steps per episode."""
    closed = actions[:, -1] < 0.5
    closes = np.flatnonzero(closed[1:] & ~closed[:-1]) + 1
    mask = np.zeros(len(actions), bool)
    for t in closes:
        mask[max(0, t - window + 1):t + 1] = True
    return mask


def random_shift(images: np.ndarray, max_shift_px: int) -> np.ndarray:
    """(V, C, H, W) -> same shape, each view translated by its own random (dy, dx) in [-max_shift_px, max_shift_px],
    edges replicated (the random-shift augmentation of DrQ / Diffusion Policy's random crop, without rescaling).
    Draws from numpy's global RNG (seeded and checkpointed by the trainer)."""
    if max_shift_px <= 0:
        return images
    s = max_shift_px
    h, w = images.shape[-2:]
    padded = np.pad(images, ((0, 0), (0, 0), (s, s), (s, s)), mode="edge")
    offsets = np.random.randint(0, 2 * s + 1, size=(images.shape[0], 2))  # (V, [dy, dx]) into the padded view
    return np.stack([padded[v, :, dy:dy + h, dx:dx + w] for v, (dy, dx) in enumerate(offsets)])


class RobotDataset(torch.utils.data.Dataset):
    """(episode, t) samples for robot batches; episodes are decoded once and kept resized in memory.

    image_shift_px > 0 randomly translates each VLM view of every sample (`random_shift`, numpy's global RNG, whose
    state the checkpoints keep); the world model's video is never shifted (its targets are the true frames)."""

    def __init__(self, source: EpisodeSource, cfg: VLAJEPAConfig, tokenizer, layout: PromptLayout, stats: dict,
                 cache_episodes: bool = True, drop_idle: bool = False, idle_xyz: float = 5e-4,
                 image_shift_px: int = 0, grasp_repeat: int = 1, grasp_window: int = 10,
                 object_norm: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        if grasp_repeat < 1 or grasp_window < 1:
            raise ValueError(f"grasp_repeat={grasp_repeat} and grasp_window={grasp_window} must be >= 1")
        if image_shift_px < 0 or image_shift_px >= cfg.image_size // 2:
            raise ValueError(f"image_shift_px={image_shift_px} must be in [0, image_size/2 = {cfg.image_size // 2})")
        self.source, self.cfg, self.tok, self.layout, self.stats = source, cfg, tokenizer, layout, stats
        self.image_shift_px = image_shift_px
        self.cache_episodes = cache_episodes
        self.object_norm = None  # (mean, std) (N, 3) for the auxiliary object loss
        if cfg.num_aux_objects:
            info = source_objects(source)
            if not info:
                raise DataError("the auxiliary object loss needs a dataset with object positions (bags recorded "
                                "with /sim/object_poses, converted by vla-jepa bags-to-dataset)")
            if len(info["names"]) != cfg.num_aux_objects:
                raise DataError(f"dataset tracks {len(info['names'])} objects {info['names']}, config "
                                f"num_aux_objects={cfg.num_aux_objects}")
            # a model that reads its own estimate (cfg.action_head_objects) keeps the normalisation it learnt with
            mean, std = object_norm if object_norm is not None else (info["mean_m"], info["std_m"])
            self.object_norm = (np.asarray(mean, np.float32).reshape(-1, 3),
                                np.maximum(np.asarray(std, np.float32).reshape(-1, 3), 1e-3))
        self._cache: dict[int, dict] = {}
        self._shared: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}  # frame digest -> (images, video)
        self.index = []
        self.grasp_samples = 0  # extra index entries from grasp_repeat
        for e in range(len(source)):
            actions = actions_states(source, e)[0] if drop_idle or grasp_repeat > 1 else None
            keep = idle_mask(actions, idle_xyz) if drop_idle else None
            self.index += [(e, t) for t in range(source.episode_length(e)) if keep is None or keep[t]]
            if grasp_repeat > 1:  # oversample the grasps: their steps appear grasp_repeat times per epoch
                extra = [(e, int(t)) for t in np.flatnonzero(grasp_mask(actions, grasp_window))
                         if keep is None or keep[t]] * (grasp_repeat - 1)
                self.index += extra
                self.grasp_samples += len(extra)
        if not self.index:
            raise DataError("robot dataset has no samples")

    def __len__(self) -> int:
        return len(self.index)

    def _episode(self, e: int) -> dict:
        if e in self._cache:
            return self._cache[e]
        ep = self.source.load(e)
        cfg = self.cfg
        v = ep.frames.shape[1]
        vlm_views = [min(i, v - 1) for i in range(cfg.num_views)]  # fewer cameras: repeat the last one
        wm_views = [0, 0] if v == 1 else [min(w, v - 1) for w in cfg.wm_views]
        if cfg.state_dim and ep.states.shape[1] != cfg.state_dim:
            raise DataError(f"episode {e}: state dim {ep.states.shape[1]} != config state_dim {cfg.state_dim}")
        if ep.actions.shape[1] != cfg.action_dim:
            raise DataError(f"episode {e}: action dim {ep.actions.shape[1]} != config action_dim {cfg.action_dim}")
        ids, mask = encode_with_layout(self.tok, self.layout, ep.instruction, cfg.num_transitions,
                                       cfg.latent_tokens_per_step, cfg.num_embodied_tokens)
        images, video = self._pictures(ep.frames, vlm_views, wm_views)
        data = {
            "images": images, "video": video,
            "actions": normalize_actions(ep.actions, self.stats),
            "state": ep.states.astype(np.float32),
            "input_ids": ids, "attention_mask": mask,
        }
        if self.object_norm is not None:
            mean, std = self.object_norm
            data["objects"] = ((ep.objects - mean) / std).astype(np.float32)  # (T, N, 3)
        if self.cache_episodes:
            self._cache[e] = data
        return data

    def _pictures(self, frames: np.ndarray, vlm_views: list[int], wm_views: list[int]) -> tuple[list, list]:
        """-> per step t: VLM images (V, 3, S, S) and world-model video frames (2, 3, s, s), uint8, resized once.

        Steps with the same camera frames share one pair of arrays in the cache, so an episode's counterfactual
        copies (the same frames, or a prefix of them, with other words and actions) cost no image memory."""
        cfg = self.cfg
        images = resize_frames(frames[:, vlm_views], cfg.image_size).transpose(0, 1, 4, 2, 3)
        video = resize_frames(frames[:, wm_views], cfg.vjepa.crop_size).transpose(0, 1, 4, 2, 3)
        if not self.cache_episodes:
            return list(images), list(video)
        out_images, out_video = [], []
        for t in range(len(frames)):
            key = hashlib.blake2b(np.ascontiguousarray(frames[t]).data, digest_size=16).digest()
            if key not in self._shared:  # copies: a view would keep the whole episode's array alive
                self._shared[key] = (np.ascontiguousarray(images[t]), np.ascontiguousarray(video[t]))
            pair = self._shared[key]
            out_images.append(pair[0])
            out_video.append(pair[1])
        return out_images, out_video

    def __getitem__(self, i: int) -> dict:
        e, t = self.index[i]
        d = self._episode(e)
        n = len(d["actions"])
        fidx = np.minimum(np.arange(t, t + self.cfg.num_frames), n - 1)
        aidx = np.minimum(np.arange(t, t + self.cfg.horizon), n - 1)
        out = {
            "images": torch.from_numpy(random_shift(d["images"][t], self.image_shift_px)),  # (V, 3, H, W) uint8
            "video": torch.from_numpy(np.stack([d["video"][j] for j in fidx], axis=1)),  # (2, T, 3, S, S) uint8
            "actions": torch.from_numpy(d["actions"][aidx]),
            "input_ids": torch.from_numpy(d["input_ids"]), "attention_mask": torch.from_numpy(d["attention_mask"]),
        }
        if self.cfg.state_dim:
            out["state"] = torch.from_numpy(d["state"][t])
        if "objects" in d:
            out["objects"] = torch.from_numpy(d["objects"][t])
        return out


class VideoDataset(torch.utils.data.Dataset):
    """Human-video samples: a window of T consecutive frames, view duplicated.

    `ds[i]` always gives video i's same window (keyed by `window_seed` and i); `ds[(i, draw)]` draws the window from
    (window_seed, i, draw), so a trainer passing a running sample counter as `draw` gets a fresh window every time
    a video comes round (as the public loader's random start does), reproducibly and resumably.
    """

    def __init__(self, source: VideoFolderSource, cfg: VLAJEPAConfig, tokenizer, layout: PromptLayout,
                 window_seed: int = 0) -> None:
        self.source, self.cfg, self.tok, self.layout, self.seed = source, cfg, tokenizer, layout, window_seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        i, draw = key if isinstance(key, tuple) else (key, None)
        frames, label = self.source.load(i)
        cfg = self.cfg
        n = len(frames)
        span = max(1, n - cfg.num_frames + 1)
        if draw is None:
            start = np.random.RandomState(self.seed * 1000003 + i).randint(0, span)
        else:
            start = int(np.random.default_rng([self.seed, i, int(draw)]).integers(0, span))
        idx = np.minimum(np.arange(start, start + cfg.num_frames), n - 1)
        clip = resize_frames(frames[idx], cfg.vjepa.crop_size).transpose(0, 3, 1, 2)  # (T, 3, S, S)
        image = resize_frames(frames[idx[0]], cfg.image_size).transpose(2, 0, 1)
        ids, mask = encode_with_layout(self.tok, self.layout, label, cfg.num_transitions, cfg.latent_tokens_per_step,
                                       cfg.num_embodied_tokens, video=True)
        return {"images": torch.from_numpy(np.ascontiguousarray(image))[None],
                "video": torch.from_numpy(np.ascontiguousarray(clip))[None].repeat(2, 1, 1, 1, 1),
                "input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}


def collate(samples: list[dict]) -> dict:
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
