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


# ---- what LeRobot 0.6.x needs beyond loading: statistics for every feature, the full meta/episodes columns ----

STATS = ("min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99")


def _write(tmp_path, eps, **kw):
    return write_lerobot_v3(tmp_path, eps, fps=10, state_names=[f"s{i}" for i in range(8)],
                            action_names=[f"a{i}" for i in range(7)], **kw)


def _with_objects(ep, seed, names=("red_cube", "bowl")):
    rng = np.random.default_rng(seed)
    return Episode(ep.frames, ep.state, ep.actions, ep.task,
                   objects=rng.normal(size=(len(ep.actions), len(names), 3)).astype(np.float32), object_names=names)


def test_stats_cover_every_feature_in_lerobot_layout(tmp_path):
    eps = [_episode(12, 0, "a"), _episode(9, 1, "b")]
    info = _write(tmp_path, eps)
    stats = json.loads((tmp_path / "meta/stats.json").read_text())
    assert set(stats) == set(info["features"])  # cameras and bookkeeping columns too, as LeRobot computes them
    for key in ("observation.images.front", "observation.images.wrist"):
        s = {k: np.array(v) for k, v in stats[key].items()}
        assert set(s) == set(STATS)
        assert all(s[k].shape == (3, 1, 1) for k in STATS if k != "count") and s["count"].tolist() == [21]
        pixels = np.concatenate([e.frames[key.rsplit(".", 1)[1]] for e in eps]).reshape(-1, 3) / 255.0
        np.testing.assert_allclose(s["mean"][:, 0, 0], pixels.mean(0), atol=1e-9)
        np.testing.assert_allclose(s["std"][:, 0, 0], pixels.std(0), atol=1e-9)
        np.testing.assert_allclose(s["min"][:, 0, 0], pixels.min(0))
        np.testing.assert_allclose(s["max"][:, 0, 0], pixels.max(0))
        np.testing.assert_allclose(s["q50"][:, 0, 0], np.quantile(pixels, 0.5, axis=0, method="inverted_cdf"))
        np.testing.assert_allclose(s["q99"][:, 0, 0], np.quantile(pixels, 0.99, axis=0, method="inverted_cdf"))
    actions = np.concatenate([e.actions for e in eps]).astype(np.float64)
    a = stats["action"]
    assert set(a) == set(STATS) and a["count"] == [21]
    np.testing.assert_allclose(a["q10"], np.quantile(actions, 0.1, axis=0), rtol=1e-12)
    np.testing.assert_allclose(a["std"], actions.std(0), rtol=1e-12)
    assert stats["index"]["max"] == [20] and stats["frame_index"]["min"] == [0] and stats["timestamp"]["max"] == [
        pytest.approx(1.1)]


def test_episodes_table_has_the_columns_lerobot_edits_with(tmp_path):
    eps = [_episode(12, 0, "a"), _episode(9, 1, "b"), _episode(5, 2, "a")]
    info = _write(tmp_path, eps)
    rows = pq.read_table(tmp_path / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    for i, row in enumerate(rows):
        assert row["meta/episodes/chunk_index"] == 0 and row["meta/episodes/file_index"] == 0
        assert row["data/chunk_index"] == 0 and row["data/file_index"] == 0
        for key in ("observation.images.front", "observation.images.wrist"):
            assert row[f"videos/{key}/chunk_index"] == 0 and row[f"videos/{key}/file_index"] == 0
            assert row[f"videos/{key}/to_timestamp"] - row[f"videos/{key}/from_timestamp"] == pytest.approx(
                len(eps[i].actions) / 10)
        for feature in info["features"]:
            for stat in STATS:
                assert f"stats/{feature}/{stat}" in row, (feature, stat)
        assert row["tasks"] == [eps[i].task]
    # per-episode values: the episode's own frames and actions
    np.testing.assert_allclose(rows[1]["stats/action/mean"], eps[1].actions.astype(np.float64).mean(0), rtol=1e-12)
    assert rows[1]["stats/action/count"] == [9] and rows[1]["stats/index/min"] == [12.0]
    front = np.array(rows[2]["stats/observation.images.front/mean"])
    assert front.shape == (3, 1, 1)
    np.testing.assert_allclose(front[:, 0, 0], eps[2].frames["front"].reshape(-1, 3).mean(0) / 255.0, atol=1e-9)
    # the dataset statistics are what LeRobot's count-weighted aggregation of the episode rows gives
    stats = json.loads((tmp_path / "meta/stats.json").read_text())
    counts = np.array([r["stats/observation.images.wrist/count"][0] for r in rows], float)
    means = np.array([np.array(r["stats/observation.images.wrist/mean"])[:, 0, 0] for r in rows])
    np.testing.assert_allclose((means * counts[:, None]).sum(0) / counts.sum(),
                               np.array(stats["observation.images.wrist"]["mean"])[:, 0, 0], atol=1e-12)


def test_object_positions_are_an_optional_feature(tmp_path):
    eps = [_with_objects(_episode(6, 0, "a"), 0), _with_objects(_episode(4, 1, "b"), 1)]
    info = _write(tmp_path / "with", eps)
    ft = info["features"]["observation.environment_state"]
    assert ft["shape"] == [6] and ft["names"] == ["red_cube.x", "red_cube.y", "red_cube.z", "bowl.x", "bowl.y",
                                                  "bowl.z"]
    data = pq.read_table(tmp_path / "with/data/chunk-000/file-000.parquet").to_pydict()
    np.testing.assert_array_equal(np.array(data["observation.environment_state"], np.float32),
                                  np.concatenate([e.objects.reshape(len(e.objects), -1) for e in eps]))
    stats = json.loads((tmp_path / "with/meta/stats.json").read_text())
    assert len(stats["observation.environment_state"]["q90"]) == 6

    info = _write(tmp_path / "without", eps, objects=False)
    assert "observation.environment_state" not in info["features"]
    with pytest.raises(ValueError, match="episode 1: objects"):
        _write(tmp_path / "mixed", [eps[0], _with_objects(_episode(4, 1, "b"), 1, names=("bowl",))])
    with pytest.raises(ValueError, match="objects must be finite"):
        Episode(frames={}, state=np.zeros((2, 8)), actions=np.zeros((2, 7)), task="x",
                objects=np.zeros((2, 1, 3)), object_names=("a", "b"))


def test_files_roll_over_at_their_size_limits(tmp_path):
    eps = [_episode(10, i, "a") for i in range(5)]
    # limits far below one episode: every episode starts a new file; 2 files per chunk
    _write(tmp_path, eps, data_files_size_in_mb=1e-6, video_files_size_in_mb=1e-6, chunks_size=2)
    rows = pq.read_table(tmp_path / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    where = [(r["data/chunk_index"], r["data/file_index"]) for r in rows]
    assert where == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
    key = "videos/observation.images.front"
    assert [(r[f"{key}/chunk_index"], r[f"{key}/file_index"]) for r in rows] == where
    assert all(r[f"{key}/from_timestamp"] == 0.0 for r in rows)
    for i, r in enumerate(rows):
        data = pq.read_table(tmp_path / f"data/chunk-{r['data/chunk_index']:03d}/file-{r['data/file_index']:03d}"
                                        ".parquet").to_pydict()
        assert data["index"] == list(range(10 * i, 10 * i + 10))
        video = _decode(tmp_path / f"{key}/chunk-{r[f'{key}/chunk_index']:03d}/file-{r[f'{key}/file_index']:03d}.mp4")
        assert len(video) == 10
        assert np.abs(video.astype(int) - eps[i].frames["front"].astype(int)).mean() < 3.0


def test_bad_rates_and_limits_are_refused(tmp_path):
    with pytest.raises(ValueError, match="fps=12.5"):
        write_lerobot_v3(tmp_path, [_episode(3, 0, "a")], fps=12.5, state_names=["s"] * 8, action_names=["a"] * 7)
    with pytest.raises(ValueError, match="chunks_size 0"):
        _write(tmp_path, [_episode(3, 0, "a")], chunks_size=0)
    with pytest.raises(ValueError, match=r"episode 0: state \(3, 8\) / actions \(3, 7\) do not match 8 state names"):
        write_lerobot_v3(tmp_path, [_episode(3, 0, "a")], fps=10, state_names=["s"] * 8, action_names=["a"] * 6)
    with pytest.raises(ValueError, match="episode 1: cameras \\['front'\\] differ"):
        ep = _episode(3, 1, "a")
        _write(tmp_path, [_episode(3, 0, "a"), Episode({"front": ep.frames["front"]}, ep.state, ep.actions, "a")])
