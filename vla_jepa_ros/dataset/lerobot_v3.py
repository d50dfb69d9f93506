"""Write episodes as a LeRobot v3.0 dataset (parquet + mp4 + meta), for people who train with LeRobot.

The layout is the one LeRobot 0.6.x reads, edits (`lerobot-edit-dataset`) and trains on (`lerobot-train`):
    meta/info.json         features, fps, file-size limits, path templates
    meta/stats.json        per feature: min max mean std count q01 q10 q50 q90 q99; camera features per channel,
                           shape (3, 1, 1), in [0, 1] (pixel / 255)
    meta/tasks.parquet     task text (pandas index) -> task_index
    meta/episodes/chunk-000/file-000.parquet
                           one row per episode: length, tasks, where its rows and video frames are
                           (data/ and videos/<key>/ chunk_index, file_index, from/to), the per-episode statistics
                           (stats/<feature>/<stat>) and where this row itself is (meta/episodes/chunk_index, file_index)
    data/chunk-CCC/file-FFF.parquet                      one row group per episode
    videos/observation.images.<camera>/chunk-CCC/file-FFF.mp4   H.264 yuv420p, episodes back to back
A data or video file is closed and the next one (file_index + 1; chunk_index + 1 after `chunks_size` files) is
started once it has reached its size limit, as LeRobot does. Per-step object positions, when the episodes have
them, are the feature `observation.environment_state` (LeRobot's name for a vector describing the scene).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable

import numpy as np

CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
STATE_KEY = "observation.state"
ACTION_KEY = "action"
OBJECTS_KEY = "observation.environment_state"  # (N * 3,) object positions, m: obj0.x obj0.y obj0.z obj1.x ...
INDEX_KEYS = ("frame_index", "episode_index", "index", "task_index")  # int64 bookkeeping columns
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # LeRobot's stats keys q01 q10 q50 q90 q99
QUANTILE_KEYS = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)


@dataclasses.dataclass(frozen=True)
class Episode:
    """frames: camera -> (T, H, W, 3) uint8 RGB; state: (T, S); actions: (T, D); task: the instruction;
    objects: optional (T, N, 3) positions (m) of the N objects `object_names` (simulation ground truth)."""

    frames: dict[str, np.ndarray]
    state: np.ndarray
    actions: np.ndarray
    task: str
    objects: np.ndarray | None = None
    object_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.actions)
        for cam, f in self.frames.items():
            if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8 or len(f) != n:
                raise ValueError(f"camera {cam}: frames must be ({n}, H, W, 3) uint8, got {f.shape} {f.dtype}")
        if len(self.state) != n:
            raise ValueError(f"state has {len(self.state)} rows, actions {n}")
        if self.objects is not None:
            o = np.asarray(self.objects)
            if o.shape != (n, len(self.object_names), 3) or not len(self.object_names) or not np.isfinite(o).all():
                raise ValueError(f"objects must be finite ({n}, {len(self.object_names)} names, 3) with at least one "
                                 f"name, got {o.shape} for names {list(self.object_names)}")


def video_key(camera: str) -> str:
    return f"observation.images.{camera}"


# ---- statistics (LeRobot's meaning: per dimension over frames; quantiles q01..q99) ----

def vector_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """x: (T,) or (T, D) -> {stat: (D,) float64 (or (1,) for a (T,) column), count: (1,) int64}."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    stats = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0),
             "count": np.array([len(x)], np.int64)}
    for key, q in zip(QUANTILE_KEYS, np.quantile(x, QUANTILES, axis=0)):
        stats[key] = q
    return stats


def channel_histogram(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (3, 256) int64 pixel counts per channel (exact image statistics from it)."""
    return np.stack([np.bincount(frames[..., c].ravel(), minlength=256) for c in range(frames.shape[-1])])


def image_stats(hist: np.ndarray, n_frames: int) -> dict[str, np.ndarray]:
    """Per-channel statistics of pixel / 255 from `channel_histogram` counts: each (C, 1, 1) float64, as LeRobot
    keeps camera statistics; count = frames."""
    values = np.arange(hist.shape[1], dtype=np.float64) / 255.0
    total = hist.sum(1, keepdims=True).astype(np.float64)  # (C, 1)
    mean = (hist * values).sum(1) / total[:, 0]
    var = (hist * values ** 2).sum(1) / total[:, 0] - mean ** 2
    nonzero = hist > 0
    stats = {"min": values[nonzero.argmax(1)], "max": values[hist.shape[1] - 1 - nonzero[:, ::-1].argmax(1)],
             "mean": mean, "std": np.sqrt(np.maximum(var, 0.0))}
    cdf = np.cumsum(hist, 1) / total  # (C, 256)
    for key, q in zip(QUANTILE_KEYS, QUANTILES):
        stats[key] = values[np.minimum((cdf < q).sum(1), hist.shape[1] - 1)]  # smallest value with cdf >= q
    out = {k: v.reshape(-1, 1, 1) for k, v in stats.items()}
    out["count"] = np.array([n_frames], np.int64)
    return out


def _json_stats(stats: dict[str, dict[str, np.ndarray]]) -> dict:
    return {feature: {k: v.tolist() for k, v in s.items()} for feature, s in stats.items()}


# ---- files ----

def _next_file(chunk_index: int, file_index: int, chunks_size: int) -> tuple[int, int]:
    return (chunk_index + 1, 0) if file_index + 1 >= chunks_size else (chunk_index, file_index + 1)


def _tasks_table(tasks: dict[str, int]):
    """meta/tasks.parquet as LeRobot (pandas) writes it: column task_index, the task text as the index.
    pandas is not a dependency here, so the pandas index metadata is written by hand."""
    import pyarrow as pa

    table = pa.table({"task_index": pa.array(list(tasks.values()), pa.int64()),
                      "task": pa.array(list(tasks), pa.string())})
    pandas_meta = {"index_columns": ["task"], "column_indexes": [],
                   "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                                "numpy_type": "int64", "metadata": None},
                               {"name": "task", "field_name": "task", "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": None}],
                   "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0"}
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


class _VideoWriter:
    """One mp4 file; counts the bytes it has muxed so the caller can roll over at the size limit."""

    def __init__(self, path: Path, fps: int, height: int, width: int, crf: int) -> None:
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("libx264", rate=fps)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.options = {"crf": str(crf), "preset": "veryfast", "g": "2"}
        self.frames = 0
        self.bytes = 0

    def _mux(self, packets) -> None:
        for packet in packets:
            self.bytes += packet.size
            self.container.mux(packet)

    def write(self, rgb: np.ndarray) -> None:
        import av

        self._mux(self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
        self.frames += 1

    def close(self) -> None:
        self._mux(self.stream.encode())
        self.container.close()


class _Camera:
    """The video files of one camera feature: where the current one is and how far it has got."""

    def __init__(self, out: Path, key: str, shape: tuple[int, int], fps: int, crf: int, limit_bytes: float,
                 chunks_size: int) -> None:
        self.out, self.key, self.shape, self.fps, self.crf = out, key, shape, fps, crf
        self.limit_bytes, self.chunks_size = limit_bytes, chunks_size
        self.chunk_index = self.file_index = 0
        self.writer = self._open()
        self.hist = np.zeros((3, 256), np.int64)
        self.frames = 0

    def _open(self) -> _VideoWriter:
        path = self.out / VIDEO_PATH.format(video_key=self.key, chunk_index=self.chunk_index,
                                            file_index=self.file_index)
        return _VideoWriter(path, self.fps, self.shape[0], self.shape[1], self.crf)

    def write_episode(self, frames: np.ndarray) -> dict:
        """Append one episode's frames; returns its videos/<key>/... columns."""
        if self.writer.frames and self.writer.bytes >= self.limit_bytes:
            self.writer.close()
            self.chunk_index, self.file_index = _next_file(self.chunk_index, self.file_index, self.chunks_size)
            self.writer = self._open()
        start_s = self.writer.frames / self.fps
        for frame in frames:
            self.writer.write(frame)
        self.frames += len(frames)
        k = f"videos/{self.key}"
        return {f"{k}/chunk_index": self.chunk_index, f"{k}/file_index": self.file_index,
                f"{k}/from_timestamp": start_s, f"{k}/to_timestamp": start_s + len(frames) / self.fps}


class _DataFiles:
    """The data parquet files: one row group per episode, the next file once the current one reached the limit."""

    def __init__(self, out: Path, limit_bytes: float, chunks_size: int) -> None:
        self.out, self.limit_bytes, self.chunks_size = out, limit_bytes, chunks_size
        self.chunk_index = self.file_index = 0
        self.writer = None
        self.path: Path | None = None

    def write_episode(self, table) -> dict:
        """Append one episode's rows; returns its data/... columns."""
        import pyarrow.parquet as pq

        if self.writer is not None and self.path.stat().st_size >= self.limit_bytes:
            self.writer.close()
            self.writer = None
            self.chunk_index, self.file_index = _next_file(self.chunk_index, self.file_index, self.chunks_size)
        if self.writer is None:
            self.path = self.out / DATA_PATH.format(chunk_index=self.chunk_index, file_index=self.file_index)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="snappy")
        self.writer.write_table(table)
        return {"data/chunk_index": self.chunk_index, "data/file_index": self.file_index}

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _episode_columns(ep_index: int, ep: Episode, fps: int, start: int, task_index: int,
                     has_objects: bool) -> dict[str, np.ndarray]:
    n = len(ep.actions)
    cols = {STATE_KEY: np.asarray(ep.state, np.float32), ACTION_KEY: np.asarray(ep.actions, np.float32)}
    if has_objects:
        cols[OBJECTS_KEY] = np.asarray(ep.objects, np.float32).reshape(n, -1)  # (T, N * 3)
    cols["timestamp"] = (np.arange(n) / fps).astype(np.float32)
    cols["frame_index"] = np.arange(n, dtype=np.int64)
    cols["episode_index"] = np.full(n, ep_index, np.int64)
    cols["index"] = np.arange(start, start + n, dtype=np.int64)
    cols["task_index"] = np.full(n, task_index, np.int64)
    return cols


def _arrow_table(cols: dict[str, np.ndarray]):
    import pyarrow as pa

    arrays = {}
    for key, x in cols.items():
        if x.ndim == 2:
            arrays[key] = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])
        else:
            arrays[key] = pa.array(x)
    return pa.table(arrays)


def write_lerobot_v3(out_dir: str | Path, episodes: Iterable[Episode], fps: int, state_names: list[str],
                     action_names: list[str], robot_type: str = "franka_fr3", crf: int = 15,
                     data_files_size_in_mb: float = 100, video_files_size_in_mb: float = 200,
                     chunks_size: int = 1000, objects: bool = True) -> dict:
    """Write `episodes` to `out_dir` as LeRobot v3.0. Returns info.json's content.

    objects: export the episodes' object positions as `observation.environment_state` when the first episode has
    them (every episode must then track the same objects). Policies such as ACT and Diffusion take that feature as
    an input; pass False for a camera-and-state-only dataset."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if fps <= 0 or int(fps) != fps:
        raise ValueError(f"fps={fps} must be a positive integer (LeRobot stores an integer frame rate)")
    if data_files_size_in_mb <= 0 or video_files_size_in_mb <= 0 or chunks_size < 1:
        raise ValueError(f"file limits must be positive: data {data_files_size_in_mb} MB, video "
                         f"{video_files_size_in_mb} MB, chunks_size {chunks_size}")
    fps = int(fps)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cameras: dict[str, _Camera] = {}
    object_names: tuple[str, ...] | None = None
    episodes_meta: list[dict] = []
    tasks: dict[str, int] = {}
    columns: dict[str, list[np.ndarray]] = {}
    data = _DataFiles(out, data_files_size_in_mb * 1e6, chunks_size)
    index = 0
    try:
        for ep_index, ep in enumerate(episodes):
            n = len(ep.actions)
            if np.shape(ep.state)[1:] != (len(state_names),) or np.shape(ep.actions)[1:] != (len(action_names),):
                raise ValueError(f"episode {ep_index}: state {np.shape(ep.state)} / actions {np.shape(ep.actions)} "
                                 f"do not match {len(state_names)} state names / {len(action_names)} action names")
            if object_names is None:
                object_names = tuple(ep.object_names) if objects and ep.objects is not None else ()
            ep_objects = tuple(ep.object_names) if ep.objects is not None else ()
            if object_names and ep_objects != object_names:
                raise ValueError(f"episode {ep_index}: objects {list(ep_objects) or None} differ from the first "
                                 f"episode's {list(object_names)} (pass objects=False to leave them out)")
            if ep_index and set(ep.frames) != set(cameras):
                raise ValueError(f"episode {ep_index}: cameras {sorted(ep.frames)} differ from {sorted(cameras)}")
            task_index = tasks.setdefault(ep.task, len(tasks))
            cols = _episode_columns(ep_index, ep, fps, index, task_index, bool(object_names))
            meta: dict = {"episode_index": ep_index, "tasks": [ep.task], "length": n}
            meta.update(data.write_episode(_arrow_table(cols)))
            meta.update({"dataset_from_index": index, "dataset_to_index": index + n})
            ep_stats = {}
            for cam, frames in ep.frames.items():
                key = video_key(cam)
                if cam not in cameras:
                    cameras[cam] = _Camera(out, key, frames.shape[1:3], fps, crf, video_files_size_in_mb * 1e6,
                                           chunks_size)
                camera = cameras[cam]
                if frames.shape[1:3] != camera.shape:
                    raise ValueError(f"episode {ep_index} camera {cam}: frames {frames.shape[1:3]} differ from the "
                                     f"first episode's {camera.shape}")
                meta.update(camera.write_episode(frames))
                hist = channel_histogram(frames)
                camera.hist += hist
                ep_stats[key] = image_stats(hist, n)
            for key, x in cols.items():
                columns.setdefault(key, []).append(x)
                ep_stats[key] = vector_stats(x)
            for feature, s in ep_stats.items():
                for stat, v in s.items():
                    meta[f"stats/{feature}/{stat}"] = v.tolist() if stat == "count" else v.astype(np.float64).tolist()
            meta["meta/episodes/chunk_index"] = 0
            meta["meta/episodes/file_index"] = 0
            episodes_meta.append(meta)
            index += n
    finally:
        for camera in cameras.values():
            camera.writer.close()
        data.close()
    if not episodes_meta:
        raise ValueError("no episodes to write")

    episodes_file = out / EPISODES_PATH.format(chunk_index=0, file_index=0)
    episodes_file.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(episodes_meta), episodes_file)
    pq.write_table(_tasks_table(tasks), out / "meta" / "tasks.parquet")
    stats = {video_key(cam): image_stats(c.hist, c.frames) for cam, c in cameras.items()}
    stats.update({key: vector_stats(np.concatenate(xs)) for key, xs in columns.items()})
    (out / "meta" / "stats.json").write_text(json.dumps(_json_stats(stats), indent=2))

    s_dim, a_dim = len(state_names), len(action_names)
    features = {
        STATE_KEY: {"dtype": "float32", "shape": [s_dim], "names": list(state_names)},
        ACTION_KEY: {"dtype": "float32", "shape": [a_dim], "names": list(action_names)},
    }
    if object_names:
        features[OBJECTS_KEY] = {"dtype": "float32", "shape": [3 * len(object_names)],
                                 "names": [f"{o}.{axis}" for o in object_names for axis in "xyz"]}
    features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    features.update({k: {"dtype": "int64", "shape": [1], "names": None} for k in INDEX_KEYS})
    for cam, camera in cameras.items():
        h, w = camera.shape
        features[camera.key] = {
            "dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
            "info": {"video.height": h, "video.width": w, "video.codec": "h264", "video.pix_fmt": "yuv420p",
                     "video.fps": fps, "video.channels": 3, "video.g": 2, "video.crf": crf,
                     "video.preset": "veryfast", "video.fast_decode": 0, "video.video_backend": "pyav",
                     "video.extra_options": {}, "has_audio": False, "is_depth_map": False}}
    info = {"codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": len(episodes_meta),
            "total_frames": index, "total_tasks": len(tasks), "chunks_size": chunks_size,
            "data_files_size_in_mb": data_files_size_in_mb, "video_files_size_in_mb": video_files_size_in_mb,
            "fps": fps, "splits": {"train": f"0:{len(episodes_meta)}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if cameras else None, "features": features}
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    return info
