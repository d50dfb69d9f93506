"""Write episodes as a LeRobot v3.0 dataset (parquet + mp4 + meta), for people who train elsewhere.

Layout (one data file and one video file per camera; LeRobot splits files at 100/200 MB, we do the same):
    meta/info.json  meta/stats.json  meta/tasks.parquet  meta/episodes/chunk-000/file-000.parquet
    data/chunk-000/file-NNN.parquet
    videos/observation.images.<camera>/chunk-000/file-NNN.mp4
Frames are H.264 (yuv420p) so any player and LeRobot's decoders read them.
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


@dataclasses.dataclass(frozen=True)
class Episode:
    """frames: camera -> (T, H, W, 3) uint8 RGB; state: (T, S); actions: (T, D); task: the instruction."""

    frames: dict[str, np.ndarray]
    state: np.ndarray
    actions: np.ndarray
    task: str

    def __post_init__(self) -> None:
        n = len(self.actions)
        for cam, f in self.frames.items():
            if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8 or len(f) != n:
                raise ValueError(f"camera {cam}: frames must be ({n}, H, W, 3) uint8, got {f.shape} {f.dtype}")
        if len(self.state) != n:
            raise ValueError(f"state has {len(self.state)} rows, actions {n}")


def _video_key(camera: str) -> str:
    return f"observation.images.{camera}"


def _stats(x: np.ndarray) -> dict:
    x = x.astype(np.float64)
    return {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
            "std": x.std(0).tolist(), "count": [int(len(x))]}


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
    def __init__(self, path: Path, fps: int, height: int, width: int, crf: int) -> None:
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("libx264", rate=fps)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.options = {"crf": str(crf), "preset": "veryfast", "g": "2"}
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        import av

        for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def write_lerobot_v3(out_dir: str | Path, episodes: Iterable[Episode], fps: int, state_names: list[str],
                     action_names: list[str], robot_type: str = "franka_fr3", crf: int = 15) -> dict:
    """Write `episodes` to `out_dir` as LeRobot v3.0. Returns info.json's content."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    (out / "meta" / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
    videos: dict[str, _VideoWriter] = {}
    rows: dict[str, list] = {k: [] for k in ("observation.state", "action", "timestamp", "frame_index",
                                             "episode_index", "index", "task_index")}
    episodes_meta: list[dict] = []
    tasks: dict[str, int] = {}
    all_state, all_action = [], []
    shapes: dict[str, tuple[int, int]] = {}
    index = 0
    for ep_index, ep in enumerate(episodes):
        n = len(ep.actions)
        task_index = tasks.setdefault(ep.task, len(tasks))
        meta = {"episode_index": ep_index, "tasks": [ep.task], "length": n, "data/chunk_index": 0,
                "data/file_index": 0, "dataset_from_index": index, "dataset_to_index": index + n}
        for cam, frames in ep.frames.items():
            key = _video_key(cam)
            if key not in videos:
                shapes[key] = frames.shape[1:3]
                videos[key] = _VideoWriter(out / VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0),
                                           fps, frames.shape[1], frames.shape[2], crf)
            if frames.shape[1:3] != shapes[key]:
                raise ValueError(f"episode {ep_index} camera {cam}: frames {frames.shape[1:3]} differ from the "
                                 f"first episode's {shapes[key]}")
            start = videos[key].frames / fps
            for frame in frames:
                videos[key].write(frame)
            meta.update({f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                         f"videos/{key}/from_timestamp": start, f"videos/{key}/to_timestamp": start + n / fps})
        rows["observation.state"] += [s.astype(np.float32).tolist() for s in ep.state]
        rows["action"] += [a.astype(np.float32).tolist() for a in ep.actions]
        rows["timestamp"] += (np.arange(n) / fps).astype(np.float32).tolist()
        rows["frame_index"] += list(range(n))
        rows["episode_index"] += [ep_index] * n
        rows["index"] += list(range(index, index + n))
        rows["task_index"] += [task_index] * n
        all_state.append(ep.state)
        all_action.append(ep.actions)
        episodes_meta.append(meta)
        index += n
    if not episodes_meta:
        raise ValueError("no episodes to write")
    for writer in videos.values():
        writer.close()

    s_dim, a_dim = len(state_names), len(action_names)
    table = pa.table({
        "observation.state": pa.array(rows["observation.state"], type=pa.list_(pa.float32(), s_dim)),
        "action": pa.array(rows["action"], type=pa.list_(pa.float32(), a_dim)),
        "timestamp": pa.array(rows["timestamp"], type=pa.float32()),
        **{k: pa.array(rows[k], type=pa.int64()) for k in ("frame_index", "episode_index", "index", "task_index")},
    })
    data_file = out / DATA_PATH.format(chunk_index=0, file_index=0)
    data_file.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, data_file)
    pq.write_table(pa.Table.from_pylist(episodes_meta), out / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    pq.write_table(_tasks_table(tasks), out / "meta" / "tasks.parquet")
    stats = {"observation.state": _stats(np.concatenate(all_state)), "action": _stats(np.concatenate(all_action))}
    (out / "meta" / "stats.json").write_text(json.dumps(stats, indent=2))

    features = {
        "observation.state": {"dtype": "float32", "shape": [s_dim], "names": list(state_names)},
        "action": {"dtype": "float32", "shape": [a_dim], "names": list(action_names)},
        **{k: {"dtype": "int64", "shape": [1], "names": None}
           for k in ("frame_index", "episode_index", "index", "task_index")},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    }
    for key, (h, w) in shapes.items():
        features[key] = {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
                         "info": {"video.height": h, "video.width": w, "video.codec": "h264",
                                  "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                                  "video.channels": 3, "has_audio": False}}
    info = {"codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": len(episodes_meta),
            "total_frames": index, "total_tasks": len(tasks), "chunks_size": 1000, "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200, "fps": fps, "splits": {"train": f"0:{len(episodes_meta)}"},
            "data_path": DATA_PATH, "video_path": VIDEO_PATH if videos else None, "features": features}
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    return info
