"""Test helpers shared by the vla_jepa tests."""

import numpy as np
import torch

from vla_jepa.data import InMemoryEpisodeSource, RobotDataset, collate, synthetic_episodes
from vla_jepa.normalize import compute_stats


def make_batch(model, batch_size=2, seed=0):
    cfg = model.cfg
    eps = synthetic_episodes(2, length=12, num_views=cfg.num_views, state_dim=cfg.state_dim, seed=seed)
    stats = compute_stats(np.concatenate([e.actions for e in eps]))
    ds = RobotDataset(InMemoryEpisodeSource(eps), cfg, model.tokenizer, model.robot_layout, stats)
    batch = collate([ds[i * 5] for i in range(batch_size)])
    batch["sample_seed"] = torch.arange(batch_size)
    return batch, stats


def write_mp4(path, frames, fps=10):
    """(T, H, W, 3) uint8 RGB -> mp4 (H.264 when available, else mpeg4)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as c:
        try:
            s = c.add_stream("libx264", rate=fps)
            s.options = {"crf": "10", "preset": "veryfast"}
        except Exception:  # noqa: BLE001
            s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def write_video_folder(root, n=3, length=12, size=48):
    """Human-video folder: n mp4s + labels.csv (`id;label`)."""
    rng = np.random.RandomState(0)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        frames = (rng.rand(length, size, size, 3) * 255).astype(np.uint8)
        write_mp4(root / f"{100 + i}.mp4", frames)
        rows.append(f"{100 + i};Pushing something from left to right")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root
