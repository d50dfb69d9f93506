"""Run by the LeRobot venv's Python (test_lerobot_real.py): open a dataset folder with lerobot's own
LeRobotDataset and dump what it returns to an .npz, so the test (in the project's venv) compares it with what was
exported. Usage: python lerobot_probe.py ROOT OUT.npz
Nothing here imports the project; lerobot is the only reader."""
import json
import sys

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset


def main(root: str, out: str) -> None:
    plain = LeRobotDataset("local/probe", root=root, video_backend="pyav")
    meta = plain.meta
    cams = list(meta.video_keys)
    dump = {"num_frames": np.array(plain.num_frames), "num_episodes": np.array(plain.num_episodes)}
    for key in ("action", "observation.state", "observation.environment_state", "episode_index", "frame_index",
                "index", "timestamp"):
        if key in meta.features:
            dump[key] = np.stack([np.asarray(plain.hf_dataset[i][key]) for i in range(plain.num_frames)])
    # the first and last frame of every episode, decoded from the videos through the episode's from_timestamp
    ends = [(int(e["dataset_from_index"]), int(e["dataset_to_index"]) - 1) for e in meta.episodes]
    for cam in cams:
        dump[f"{cam}/first"] = np.stack([plain[a][cam].numpy() for a, _ in ends])  # (E, 3, H, W) float in [0, 1]
        dump[f"{cam}/last"] = np.stack([plain[b][cam].numpy() for _, b in ends])
    dump["tasks"] = np.array([plain[a]["task"] for a, _ in ends])
    # delta_timestamps: a chunk of future actions (padded past the episode end) and the previous frame
    fps = meta.fps
    deltas = {"action": [k / fps for k in range(4)], cams[0]: [-1 / fps, 0.0]}
    chunked = LeRobotDataset("local/probe", root=root, video_backend="pyav", delta_timestamps=deltas)
    last = ends[0][1]
    item = chunked[last - 1]
    dump["chunk_action"] = item["action"].numpy()
    dump["chunk_action_is_pad"] = item["action_is_pad"].numpy()
    dump["chunk_image"] = item[cams[0]].numpy()  # (2, 3, H, W)
    dump["stats"] = np.array(json.dumps({k: {s: np.asarray(v).tolist() for s, v in d.items()}
                                         for k, d in meta.stats.items()}))
    np.savez(out, **dump)


if __name__ == "__main__":
    main(*sys.argv[1:])
