"""Data readers: native format, LeRobot v2.1 / v3.0, human-video folders; bad data names the file."""

import json

import numpy as np
import pytest
import torch

from vj_helpers import write_mp4, write_video_folder
from vla_jepa.data import (ConcatEpisodeSource, DataError, LeRobotEpisodeSource, NativeEpisodeSource, RobotDataset, VideoDataset,
                           VideoFolderSource, synthetic_episodes, write_episode_dataset)
from vla_jepa.normalize import load_stats, normalize_actions, unnormalize_actions


def _episodes(n=2, length=10, views=2):
    return synthetic_episodes(n, length=length, num_views=views, image_size=64)


def test_native_roundtrip_and_sample_contract(tmp_path, tiny_model):
    cfg = tiny_model.cfg
    eps = _episodes()
    root = write_episode_dataset(tmp_path / "ds", eps, cameras=["front", "wrist"], fps=10)
    src = NativeEpisodeSource(root)
    assert len(src) == 2 and src.episode_length(1) == 10
    ep = src.load(1)
    assert np.array_equal(ep.frames, eps[1].frames) and ep.instruction == eps[1].instruction
    stats = load_stats(root / "dataset_statistics.json")
    ds = RobotDataset(src, cfg, tiny_model.tokenizer, tiny_model.robot_layout, stats)
    s = ds[9]  # last step: frame and action indices clamp at the episode end
    assert s["images"].shape == (cfg.num_views, 3, cfg.image_size, cfg.image_size) and s["images"].dtype == torch.uint8
    assert s["video"].shape == (2, cfg.num_frames, 3, cfg.vjepa.crop_size, cfg.vjepa.crop_size)
    assert torch.equal(s["video"][:, 0], s["video"][:, -1])
    assert s["actions"].shape == (cfg.horizon, cfg.action_dim)
    assert torch.equal(s["actions"][0], s["actions"][-1])
    assert s["state"].shape == (cfg.state_dim,)


def test_several_native_datasets_read_as_one_with_pooled_object_statistics(tmp_path):
    """--data A B: episodes of A then B; the object positions' mean/std equal those of all steps together; a
    dataset with other cameras is refused by name."""
    a_eps, b_eps = _episodes(2, length=10), synthetic_episodes(3, length=6, image_size=64, seed=7)
    a = NativeEpisodeSource(write_episode_dataset(tmp_path / "a", a_eps, cameras=["front", "wrist"], fps=10))
    b = NativeEpisodeSource(write_episode_dataset(tmp_path / "b", b_eps, cameras=["front", "wrist"], fps=10))
    both = ConcatEpisodeSource([a, b])
    assert len(both) == 5 and [both.episode_length(i) for i in range(5)] == [10, 10, 6, 6, 6]
    assert np.array_equal(both.load(3).frames, b_eps[1].frames) and both.load(0).instruction == a_eps[0].instruction
    actions, states = both.actions_states(4)
    assert np.array_equal(actions, b_eps[2].actions) and np.array_equal(states, b_eps[2].states)
    steps = np.concatenate([e.objects.reshape(len(e.objects), -1) for e in a_eps + b_eps]).astype(np.float64)
    info = both.meta["objects"]
    assert info["names"] == ["square"]
    np.testing.assert_allclose(np.ravel(info["mean_m"]), steps.mean(0), atol=1e-6)
    np.testing.assert_allclose(np.ravel(info["std_m"]), steps.std(0), atol=1e-6)
    c = NativeEpisodeSource(write_episode_dataset(tmp_path / "c", _episodes(1, views=1), cameras=["front"], fps=10))
    with pytest.raises(DataError, match="cameras"):
        ConcatEpisodeSource([a, c])


def test_single_camera_is_duplicated(tmp_path, tiny_model):
    eps = _episodes(1, views=1)
    root = write_episode_dataset(tmp_path / "ds", eps, cameras=["front"], fps=10)
    src = NativeEpisodeSource(root)
    ds = RobotDataset(src, tiny_model.cfg, tiny_model.tokenizer, tiny_model.robot_layout,
                      load_stats(root / "dataset_statistics.json"))
    s = ds[0]
    assert torch.equal(s["images"][0], s["images"][1]) and torch.equal(s["video"][0], s["video"][1])


def test_bad_native_data_names_the_file(tmp_path):
    eps = _episodes()
    for e in eps:
        e.objects, e.object_names = None, ()
    root = write_episode_dataset(tmp_path / "ds", eps, cameras=["front", "wrist"], fps=10)
    np.savez(root / "episode_000001.npz", frames=np.zeros((10, 2, 8, 8, 3), np.uint8),
             state=np.zeros((9, 8), np.float32), actions=np.zeros((10, 7), np.float32))
    with pytest.raises(DataError, match=r"episode_000001\.npz: lengths differ"):
        NativeEpisodeSource(root).load(1)
    (root / "episode_000000.npz").unlink()
    with pytest.raises(DataError, match=r"episode_000000\.npz: episode file missing"):
        NativeEpisodeSource(root).load(0)
    np.savez(root / "episode_000000.npz", frames=np.zeros((10, 2, 8, 8), np.uint8),
             state=np.zeros((10, 8), np.float32), actions=np.zeros((10, 7), np.float32))
    with pytest.raises(DataError, match=r"episode_000000\.npz: frames must be uint8 \(T, V, H, W, 3\)"):
        NativeEpisodeSource(root).load(0)
    (root / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match=r"meta\.json: invalid JSON"):
        NativeEpisodeSource(root)


def _write_lerobot_v21(root, eps, fps=10):
    import pyarrow as pa
    import pyarrow.parquet as pq

    cams = ["observation.images.front", "observation.images.wrist"]
    (root / "meta").mkdir(parents=True)
    info = {"codebase_version": "v2.1", "fps": fps, "chunks_size": 1000,
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
            "features": {"observation.state": {"dtype": "float32", "shape": [8]},
                         "action": {"dtype": "float32", "shape": [7]},
                         **{c: {"dtype": "video", "shape": [64, 64, 3]} for c in cams}}}
    (root / "meta" / "info.json").write_text(json.dumps(info))
    lines = []
    for i, ep in enumerate(eps):
        n = len(ep.actions)
        table = pa.table({"observation.state": [s.tolist() for s in ep.states],
                          "action": [a.tolist() for a in ep.actions], "episode_index": [i] * n,
                          "frame_index": list(range(n)), "timestamp": (np.arange(n) / fps).tolist()})
        path = root / info["data_path"].format(episode_chunk=0, episode_index=i)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        for v, c in enumerate(cams):
            write_mp4(root / info["video_path"].format(episode_chunk=0, video_key=c, episode_index=i),
                      ep.frames[:, v], fps)
        lines.append(json.dumps({"episode_index": i, "tasks": [ep.instruction], "length": n}))
    (root / "meta" / "episodes.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _check_lerobot(src, eps):
    assert len(src) == len(eps)
    for i, ep in enumerate(eps):
        got = src.load(i)
        assert got.instruction == ep.instruction
        assert np.allclose(got.actions, ep.actions) and np.allclose(got.states, ep.states)
        assert got.frames.shape == ep.frames.shape
        assert np.abs(got.frames.astype(int) - ep.frames.astype(int)).mean() < 6  # lossy video, RGB order kept
        coloured = np.ptp(ep.frames.astype(int), axis=-1) > 100  # the square's pixels
        rgb_err = np.abs(got.frames.astype(int) - ep.frames.astype(int))[coloured].mean()
        bgr_err = np.abs(got.frames[..., ::-1].astype(int) - ep.frames.astype(int))[coloured].mean()
        assert "green" in ep.instruction or bgr_err > 3 * rgb_err  # RGB order kept (green is R/B-symmetric)


def test_lerobot_v21_reader(tmp_path):
    eps = _episodes()
    src = LeRobotEpisodeSource(_write_lerobot_v21(tmp_path / "lr", eps))
    _check_lerobot(src, eps)
    (tmp_path / "lr" / "videos" / "chunk-000" / "observation.images.wrist" / "episode_000001.mp4").unlink()
    with pytest.raises(DataError, match=r"episode_000001\.mp4: video file missing"):
        src.load(1)


def test_lerobot_v3_reader_on_the_project_writer(tmp_path):
    lr3 = pytest.importorskip("vla_jepa_ros.dataset.lerobot_v3")
    eps = _episodes(3)
    lr3.write_lerobot_v3(tmp_path / "lr3", [lr3.Episode({"front": e.frames[:, 0], "wrist": e.frames[:, 1]}, e.states,
                                                        e.actions, e.instruction) for e in eps], fps=10,
                         state_names=[f"s{i}" for i in range(8)], action_names=[f"a{i}" for i in range(7)])
    _check_lerobot(LeRobotEpisodeSource(tmp_path / "lr3"), eps)


def test_video_folder_reader(tmp_path, tiny_model):
    root = write_video_folder(tmp_path / "v")
    src = VideoFolderSource(root)
    ds = VideoDataset(src, tiny_model.cfg, tiny_model.tokenizer, tiny_model.video_layout)
    s = ds[0]
    cfg = tiny_model.cfg
    assert s["images"].shape == (1, 3, cfg.image_size, cfg.image_size)
    assert s["video"].shape == (2, cfg.num_frames, 3, cfg.vjepa.crop_size, cfg.vjepa.crop_size)
    tiny_model.check_prompt(s["input_ids"][None], video_prompt=True)
    (root / "labels.csv").write_text("100;push\n999;missing video\n")
    with pytest.raises(DataError, match=r"labels\.csv:2: no video 999"):
        VideoFolderSource(root)


def test_normalisation_roundtrip():
    from vla_jepa.normalize import compute_stats

    rng = np.random.RandomState(0)
    a = rng.uniform(-0.05, 0.05, size=(100, 7)).astype(np.float32)
    a[:, 6] = rng.rand(100) > 0.5
    stats = compute_stats(a)
    n = normalize_actions(a, stats)
    assert n[:, :6].min() >= -1 and n[:, :6].max() <= 1 and set(np.unique(n[:, 6])) <= {0.0, 1.0}
    back = unnormalize_actions(n, stats)
    assert np.allclose(back, a, atol=1e-6)
    out = unnormalize_actions(np.full((1, 7), 3.0), stats)  # clipped to [-1, 1] first
    assert np.allclose(out[0, :6], np.asarray(stats["franka"]["action"]["max"][:6])) and out[0, 6] == 1.0


def test_idle_steps_can_be_dropped(tiny_model):
    from vla_jepa.data import InMemoryEpisodeSource, idle_mask

    eps = _episodes(1, length=12)
    eps[0].actions[3:6, :3] = 0.0  # idle, gripper unchanged
    eps[0].actions[5, -1] = 1 - eps[0].actions[4, -1]  # ...except a gripper toggle at 5
    keep = idle_mask(eps[0].actions)
    assert keep.tolist()[3:7] == [False, False, True, True]
    from vla_jepa.normalize import compute_stats

    ds = RobotDataset(InMemoryEpisodeSource(eps), tiny_model.cfg, tiny_model.tokenizer, tiny_model.robot_layout,
                      compute_stats(eps[0].actions), drop_idle=True)
    assert len(ds) == 10 and (0, 3) not in ds.index and (0, 5) in ds.index


def test_grasp_mask_marks_the_steps_up_to_each_close():
    from vla_jepa.data import grasp_mask

    a = np.zeros((20, 7), np.float32)
    a[:, 6] = 1.0  # open
    a[8:12, 6] = 0.0  # closes at 8, opens at 12
    a[17:, 6] = 0.0  # closes again at 17
    assert np.flatnonzero(grasp_mask(a, 3)).tolist() == [6, 7, 8, 15, 16, 17]
    assert np.flatnonzero(grasp_mask(a, 30)).tolist() == list(range(0, 18))  # windows clip at the start
    a[:, 6] = 0.0  # closed throughout: no close event
    assert not grasp_mask(a, 3).any()


def test_grasp_steps_are_oversampled(tiny_model):
    from vla_jepa.data import InMemoryEpisodeSource
    from vla_jepa.normalize import compute_stats

    eps = _episodes(2, length=12)
    for ep in eps:
        ep.actions[:, -1] = 1.0
        ep.actions[7:, -1] = 0.0  # one close, at step 7
    src = InMemoryEpisodeSource(eps)
    args = (tiny_model.cfg, tiny_model.tokenizer, tiny_model.robot_layout, compute_stats(eps[0].actions))
    plain = RobotDataset(src, *args)
    ds = RobotDataset(src, *args, grasp_repeat=3, grasp_window=4)
    assert len(plain) == 24 and plain.grasp_samples == 0
    assert ds.grasp_samples == 2 * 4 * 2 and len(ds) == 24 + 16
    assert sorted(set(ds.index)) == sorted(plain.index)  # nothing new, only repeats
    assert ds.index.count((1, 7)) == 3 and ds.index.count((1, 3)) == 1 and ds.index.count((0, 4)) == 3
    with pytest.raises(ValueError, match="grasp_repeat=0"):
        RobotDataset(src, *args, grasp_repeat=0)


def test_random_shift_translates_each_view_and_leaves_video_alone(tiny_model):
    from vla_jepa.data import InMemoryEpisodeSource, random_shift
    from vla_jepa.normalize import compute_stats

    views = np.zeros((2, 3, 32, 32), np.uint8)
    views[:, :, 10, 12] = 255  # one marker pixel per view
    np.random.seed(0)
    seen = set()
    for _ in range(50):
        out = random_shift(views, 3)
        assert out.shape == views.shape and out.dtype == np.uint8
        for v in range(2):
            ys, xs = np.nonzero(out[v, 0])  # the marker, once (edge replication only copies black)
            assert len(ys) == 1 and abs(ys[0] - 10) <= 3 and abs(xs[0] - 12) <= 3
            seen.add((int(ys[0]) - 10, int(xs[0]) - 12))
    assert len(seen) > 10  # many different offsets, not one
    assert random_shift(views, 0) is views

    eps = _episodes(1, length=6)
    stats = compute_stats(eps[0].actions)
    plain = RobotDataset(InMemoryEpisodeSource(eps), tiny_model.cfg, tiny_model.tokenizer, tiny_model.robot_layout, stats)
    shifted = RobotDataset(InMemoryEpisodeSource(eps), tiny_model.cfg, tiny_model.tokenizer, tiny_model.robot_layout,
                           stats, image_shift_px=4)
    a, b = plain[2], shifted[2]
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["actions"], b["actions"])
    assert a["images"].shape == b["images"].shape and not torch.equal(a["images"], b["images"])
    with pytest.raises(ValueError, match="image_shift_px=64"):
        RobotDataset(InMemoryEpisodeSource(eps), tiny_model.cfg, tiny_model.tokenizer, tiny_model.robot_layout, stats,
                     image_shift_px=64)


def test_counterfactual_copies_share_the_cached_frames(tiny_model):
    """An episode and a copy of its first steps with other words hold one array per distinct frame; every sample
    reads the same as without the cache."""
    import dataclasses

    from vla_jepa.data import InMemoryEpisodeSource
    from vla_jepa.normalize import compute_stats

    eps = _episodes(2, length=10)
    copy = dataclasses.replace(eps[0], frames=eps[0].frames[:6].copy(), states=eps[0].states[:6],
                               actions=-eps[0].actions[:6], objects=eps[0].objects[:6],
                               instruction="pick up the other cube")
    src = InMemoryEpisodeSource(eps + [copy])
    args = (tiny_model.cfg, tiny_model.tokenizer, tiny_model.robot_layout, compute_stats(eps[0].actions))
    cached, uncached = RobotDataset(src, *args), RobotDataset(src, *args, cache_episodes=False)
    for i in range(len(cached)):
        a, b = cached[i], uncached[i]
        assert all(torch.equal(a[k], b[k]) for k in b), i
    assert len(cached._shared) == len({eps[e].frames[t].tobytes() for e in range(2) for t in range(10)})
    assert cached._episode(2)["images"][5] is cached._episode(0)["images"][5]  # shared, not equal copies
    assert not torch.equal(cached[25]["actions"], cached[5]["actions"])  # the copy keeps its own actions
