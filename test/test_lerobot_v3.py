"""LeRobot v3 writer: the layout LeRobot expects, and frames/actions that round-trip."""
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from vla_jepa_ros.dataset.lerobot_v3 import Episode, write_lerobot_v3


def _episode(n, seed, task):
    rng = np.random.default_rng(seed)
    # smooth images (video codecs are lossy on noise): a gradient plus a moving square
    frames = np.zeros((n, 64, 64, 3), np.uint8)
    yy, xx = np.mgrid[0:64, 0:64]
    for t in range(n):
        frames[t, ..., 0] = (xx * 4) % 256
        frames[t, ..., 1] = (yy * 4) % 256
        frames[t, 10 + t:30 + t, 10:30, 2] = 200
    return Episode(frames={"front": frames, "wrist": frames[:, ::-1].copy()},
                   state=rng.normal(size=(n, 8)).astype(np.float32),
                   actions=rng.normal(size=(n, 7)).astype(np.float32), task=task)


def _decode(path):
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def test_layout_and_round_trip(tmp_path):
    eps = [_episode(12, 0, "pick up the red cube"), _episode(9, 1, "put the red cube in the bowl"),
           _episode(5, 2, "pick up the red cube")]
    info = write_lerobot_v3(tmp_path, eps, fps=10, state_names=[f"s{i}" for i in range(8)],
                            action_names=[f"a{i}" for i in range(7)])
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 3 and info["total_frames"] == 26
    assert info["total_tasks"] == 2 and info["splits"] == {"train": "0:3"}
    assert json.loads((tmp_path / "meta/info.json").read_text()) == info
    for rel in ("meta/stats.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet",
                "data/chunk-000/file-000.parquet", "videos/observation.images.front/chunk-000/file-000.mp4",
                "videos/observation.images.wrist/chunk-000/file-000.mp4"):
        assert (tmp_path / rel).exists(), rel

    data = pq.read_table(tmp_path / "data/chunk-000/file-000.parquet").to_pydict()
    np.testing.assert_array_equal(np.array(data["action"], np.float32), np.concatenate([e.actions for e in eps]))
    np.testing.assert_array_equal(data["episode_index"], [0] * 12 + [1] * 9 + [2] * 5)
    assert data["index"] == list(range(26)) and data["task_index"] == [0] * 12 + [1] * 9 + [0] * 5
    np.testing.assert_allclose(data["timestamp"][12:14], [0.0, 0.1], atol=1e-6)

    episodes = pq.read_table(tmp_path / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["length"] for e in episodes] == [12, 9, 5]
    assert episodes[1]["dataset_from_index"] == 12 and episodes[1]["dataset_to_index"] == 21
    assert episodes[2]["videos/observation.images.front/from_timestamp"] == pytest.approx(2.1)
    tasks = pq.read_table(tmp_path / "meta/tasks.parquet").to_pydict()
    assert dict(zip(tasks["task"], tasks["task_index"])) == {"pick up the red cube": 0,
                                                             "put the red cube in the bowl": 1}

    video = _decode(tmp_path / "videos/observation.images.front/chunk-000/file-000.mp4")
    assert video.shape == (26, 64, 64, 3)
    original = np.concatenate([e.frames["front"] for e in eps]).astype(int)
    assert np.abs(video.astype(int) - original).mean() < 3.0  # lossy H.264, but the same frames in order
    # episode 1's first frame sits at from_timestamp * fps
    start = round(episodes[1]["videos/observation.images.front/from_timestamp"] * 10)
    assert np.abs(video[start].astype(int) - eps[1].frames["front"][0].astype(int)).mean() < 3.0


def test_bad_episode_shapes_are_refused():
    with pytest.raises(ValueError, match="camera front"):
        Episode(frames={"front": np.zeros((3, 8, 8, 3), np.float32)}, state=np.zeros((3, 8)),
                actions=np.zeros((3, 7)), task="x")
    with pytest.raises(ValueError, match="state has 2 rows"):
        Episode(frames={}, state=np.zeros((2, 8)), actions=np.zeros((3, 7)), task="x")
