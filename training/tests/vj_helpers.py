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
