"""Training loop (`vla-jepa-train`, a tyro CLI; also `train(TrainArgs(...))`).

Stage 1: each iteration takes one optimizer step on a robot batch (action loss + 0.1 * alignment loss) and one on
a human-video batch (alignment loss only). Stage 2: robot batches only. The scheduler steps once per optimizer step.
Distributed: under `torchrun` the global batch is sharded over ranks and the model is wrapped in
DistributedDataParallel; `--train.fsdp` shards parameters with FSDP2 (`fully_shard`) for the paper size on GPUs.
Resume is exact: model, optimizer, scheduler, RNG states and the data position are restored.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from .checkpoint import (STATS, TRAINER_STATE, check_qwen_preprocessor, config_from_hf_folders, load_checkpoint,
                         load_into, load_public_checkpoint, load_qwen3vl_folder, load_vjepa2_folder,
                         save_checkpoint)
from .config import TrainConfig, VLAJEPAConfig, get_config, replace
from .data import (ConcatEpisodeSource, InMemoryEpisodeSource, LeRobotEpisodeSource, NativeEpisodeSource, RobotDataset,
                   VideoDataset, VideoFolderSource, actions_states, collate, source_objects, synthetic_episodes)
from .model import VLAJEPA, make_model
from .normalize import _action_stats, compute_stats, load_stats, state_stats
from .prompt import load_tokenizer
from .recover import is_bundle, model_from_bundle


@dataclass
class TrainArgs:
    """Command-line arguments of `vla-jepa-train`."""

    out_dir: str = "runs/tiny"
    preset: str = "tiny"
    max_prompt_len: int = 0  # 0: the preset's; longer instructions need more (LIBERO with the tiny tokenizer: 320)
    image_size_px: int = 0  # 0: the preset's (or --init-from's); with --init-from every weight carries over to the new
    #   size (the vision position embeddings are interpolated): fine-tune at a finer picture, e.g. 128 -> 224
    train: TrainConfig = field(default_factory=TrainConfig)
    data: tuple[str, ...] = ()  # native episode dataset folder(s) (meta.json + episode_*.npz); several are concatenated
    lerobot: str | None = None  # LeRobot dataset folder (v2.1 or v3.0)
    lerobot_cameras: tuple[str, ...] = ()
    synthetic_episodes: int = 0  # >0: train on the built-in synthetic episodes (tests, smoke runs)
    synthetic_length: int = 24
    drop_idle_frames: bool = False  # drop idle steps (|dxyz| < 5e-4, no gripper change) like the public code
    image_shift_px: int = 0  # random-shift augmentation of the robot images (+-px per view; 0 = off; 4 at 128 px)
    grasp_repeat: int = 1  # >1: the steps up to each gripper close appear this many times per epoch (oversampling)
    grasp_window: int = 10  # how many steps up to (and with) each close count as the grasp
    normalize_state: bool = True  # feed (state - mean) / std (dataset statistics, kept in the exported graph)
    video_dir: str | None = None  # human videos for stage 1
    video_labels: str | None = None  # `;`-separated CSV (default video_dir/labels.csv)
    resume: str | None = None  # checkpoint folder with trainer_state.pt: continue exactly
    init_from: str | None = None  # our checkpoint folder, or an exported bundle folder (its ONNX weights are read
    #   back; see vla_jepa.recover): start from its weights (e.g. stage 1 -> stage 2, or fine-tune the shipped bundle)
    keep_action_stats: bool = True  # with --init-from a model trained on actions: keep the action min/max its outputs
    #   were learnt in (this data's actions outside them are clipped); False takes this data's (rescales every output)
    action_head_objects: bool = False  # the action head also reads the object head's estimate of where each object
    #   is relative to the gripper (needs --train.object-loss-weight > 0; added to an --init-from model at zero)
    public_pt: str | None = None  # released VLA-JEPA .pt to start from
    qwen_folder: str | None = None  # HF Qwen3-VL folder for the VLM (and its tokenizer.json)
    vjepa_folder: str | None = None  # HF V-JEPA2 folder for the target encoder
    device: str = "cpu"
    threads: int = 1  # torch threads; 1 on a shared CPU box (two OpenMP threads stall under load); 0: torch default
    progress: bool = True


# ------------------------------------------------------------------------------------------------ helpers


class GlobalSampler:
    """Deterministic epoch permutations; hands out global batches; its position is part of the trainer state."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch, self.cursor = n, seed, 0, 0

    def _perm(self, epoch: int) -> np.ndarray:
        return np.random.RandomState((self.seed * 7919 + epoch) % 2 ** 32).permutation(self.n)

    def next(self, size: int) -> list[int]:
        out: list[int] = []
        while len(out) < size:
            perm = self._perm(self.epoch)
            take = min(size - len(out), self.n - self.cursor)
            out.extend(perm[self.cursor:self.cursor + take].tolist())
            self.cursor += take
            if self.cursor >= self.n:
                self.epoch, self.cursor = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, s: dict) -> None:
        self.epoch, self.cursor = s["epoch"], s["cursor"]


def lr_lambda_factory(tcfg: TrainConfig):
    """Linear warmup then cosine to min_lr / lr_predictor (HF cosine_with_min_lr applies one ratio to all groups)."""
    ratio = tcfg.min_lr / tcfg.lr_predictor

    def fn(step: int) -> float:
        if step < tcfg.warmup_steps:
            return (step + 1) / tcfg.warmup_steps
        progress = min(1.0, (step - tcfg.warmup_steps) / max(1, tcfg.total_steps - tcfg.warmup_steps))
        return ratio + (1 - ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return fn


def build_optimizer(model: VLAJEPA, tcfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with per-module learning rates: VLM, action head, predictor (the target encoder is frozen)."""
    groups = [{"name": "vlm", "params": [p for p in model.vlm.parameters() if p.requires_grad], "lr": tcfg.lr_vlm},
              {"name": "action_model", "params": [p for p in model.action_model.parameters() if p.requires_grad],
               "lr": tcfg.lr_action_head}]
    if model.object_head is not None:
        groups.append({"name": "object_head", "params": list(model.object_head.parameters()),
                       "lr": tcfg.lr_action_head})
    if model.with_world_model:
        groups.append({"name": "vj_predictor", "params": list(model.vj_predictor.parameters()),
                       "lr": tcfg.lr_predictor})
    opt = torch.optim.AdamW(groups, lr=tcfg.lr_predictor, betas=tcfg.betas, eps=tcfg.eps,
                            weight_decay=tcfg.weight_decay)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda_factory(tcfg))


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])


def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train_step(model: torch.nn.Module, micro_batches: list[dict], kind: str, tcfg: TrainConfig, local_size: int,
               device: torch.device) -> dict[str, float]:
    """Forward/backward over micro-batches (grads accumulate, weighted by micro-batch size); returns mean losses.

    `model` is the VLAJEPA or its DDP/FSDP wrapper; DDP syncs gradients on the last micro-batch only.
    """
    totals: dict[str, float] = {}
    for i, mb in enumerate(micro_batches):
        mb = {k: v.to(device) for k, v in mb.items()}
        weight = len(mb["input_ids"]) / local_size
        last = i == len(micro_batches) - 1
        sync = model.no_sync() if hasattr(model, "no_sync") and not last else contextlib.nullcontext()
        with sync, torch.autocast(device.type, dtype=torch.bfloat16, enabled=tcfg.bf16):
            losses = model(mb, kind, tcfg.use_wm_loss, tcfg.action_loss_weight > 0)
            if kind == "robot":
                weights = {"action_loss": tcfg.action_loss_weight, "wm_loss": tcfg.wm_weight_robot,
                           "object_loss": tcfg.object_loss_weight}
                loss = sum(weights[k] * v for k, v in losses.items())
            else:
                loss = tcfg.wm_weight_video * losses["wm_loss"]
            (loss * weight).backward()
        losses["loss"] = loss
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + float(v.detach()) * weight
    return totals


def plot_metrics(jsonl: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    if not rows:
        return
    keys = [k for k in ("loss", "action_loss", "wm_loss", "object_loss") if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, len(keys) + 1, figsize=(4 * (len(keys) + 1), 3.2))
    for ax, k in zip(axes, keys):
        for kind in sorted({r["kind"] for r in rows}):
            pts = [(r["step"], r[k]) for r in rows if k in r and r["kind"] == kind]
            if pts:
                ax.plot(*zip(*pts), label=kind)
        ax.set_title(k)
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.legend()
    lr_keys = [k for k in rows[0] if k.startswith("lr_")]
    for k in lr_keys:
        axes[-1].plot([r["step"] for r in rows], [r[k] for r in rows], label=k)
    axes[-1].set_title("learning rate")
    axes[-1].legend()
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ setup


def _robot_source(args: TrainArgs, cfg: VLAJEPAConfig):
    if args.data:
        sources = [NativeEpisodeSource(d) for d in _data_dirs(args)]
        return sources[0] if len(sources) == 1 else ConcatEpisodeSource(sources)
    if args.lerobot:
        return LeRobotEpisodeSource(args.lerobot, list(args.lerobot_cameras) or None)
    if args.synthetic_episodes > 0:
        return InMemoryEpisodeSource(synthetic_episodes(args.synthetic_episodes, length=args.synthetic_length, num_views=cfg.num_views,
                                                        state_dim=max(cfg.state_dim, 1), action_dim=cfg.action_dim,
                                                        seed=args.train.seed))
    raise ValueError("no robot data: pass --data, --lerobot or --synthetic-episodes N")


def _data_dirs(args: TrainArgs) -> tuple[str, ...]:
    """--data as a tuple of folders (code may also set a single folder as a string)."""
    return (args.data,) if isinstance(args.data, (str, Path)) else tuple(args.data)


def _stats_for(source, args: TrainArgs) -> dict:
    dirs = _data_dirs(args)
    if len(dirs) == 1 and (Path(dirs[0]) / "dataset_statistics.json").exists():
        return load_stats(Path(dirs[0]) / "dataset_statistics.json")
    actions, states = [], []
    for i in range(len(source)):
        a, st = actions_states(source, i)
        actions.append(a)
        states.append(st)
    return compute_stats(np.concatenate(actions), np.concatenate(states), len(source))


def _kept_action_stats(data_stats: dict, model_stats: dict, source: str) -> dict:
    """A fine-tune normalises its targets with the action statistics of the model it starts from: min-max scaling
    with this data's range would change what every output of the trained head means (a few outlying relabelled
    actions can widen a range several times). Returns `data_stats` with the model's action entry."""
    ours, theirs = _action_stats(model_stats), _action_stats(data_stats)
    lo, hi = np.asarray(theirs["min"]), np.asarray(theirs["max"])
    keep_lo, keep_hi = np.asarray(ours["min"]), np.asarray(ours["max"])
    mask = np.asarray(ours["mask"], dtype=bool)
    wider = np.nonzero(mask & ((lo < keep_lo - 1e-6) | (hi > keep_hi + 1e-6)))[0]
    if len(wider):
        print(f"action statistics kept from {source}; this data reaches past them in dims {wider.tolist()} "
              f"(min {lo[wider].round(4).tolist()} max {hi[wider].round(4).tolist()} against "
              f"{keep_lo[wider].round(4).tolist()} {keep_hi[wider].round(4).tolist()}): those targets are clipped "
              "(--no-keep-action-stats takes this data's range)", flush=True)
    out = copy.deepcopy(data_stats)
    _action_stats(out).update(copy.deepcopy(ours))
    return out


def with_sizes(model: VLAJEPA, image_size_px: int = 0, max_prompt_len: int = 0) -> VLAJEPA:
    """The same weights at another VLM image size (more image tokens per view) or prompt length; 0 keeps a value.

    Nothing learnt depends on either: the vision position embeddings are interpolated to the patch grid, and the
    prompt layout and positions follow the config, so every tensor of the state dict loads by name and shape."""
    changes = {k: v for k, v in (("image_size", image_size_px), ("max_prompt_len", max_prompt_len))
               if v and v != getattr(model.cfg, k)}
    if not changes:
        return model
    resized = make_model(replace(model.cfg, **changes), model.tokenizer, with_world_model=model.with_world_model)
    load_into(resized, model.state_dict(), strict=True)  # a tensor whose shape differs raises, by name
    return resized


def with_object_input(model: VLAJEPA) -> VLAJEPA:
    """The same model whose action head also reads the object head's estimate (cfg.action_head_objects). The new
    object encoder starts with zero output, so the policy is unchanged until it trains."""
    if model.cfg.action_head_objects:
        return model
    if model.object_head is None:
        raise ValueError("--action-head-objects needs a model with an object head (train with "
                         "--train.object-loss-weight > 0 on data with object positions)")
    new = make_model(replace(model.cfg, action_head_objects=True), model.tokenizer,
                     with_world_model=model.with_world_model)
    report = load_into(new, model.state_dict())
    if report.unexpected or not all(k.startswith("action_model.object_") for k in report.missing):
        raise KeyError(f"adding the object input: {report}")
    return new


def with_more_objects(model: VLAJEPA, objects: dict) -> VLAJEPA:
    """The same model tracking the dataset's objects {"names", "mean_m", "std_m"} when the dataset appends objects to
    those the model knows (e.g. bags-to-dataset --named-object after a model trained without it). The model's N0
    objects keep their weights and normalisation (they are taken to be the dataset's first N0); the object head gains
    fresh outputs for the rest, and the action head's object encoder (if any) zero weights for them, so the policy
    is unchanged until it trains."""
    n0, n = model.cfg.num_aux_objects, len(objects["names"])
    if n <= n0:
        return model
    if n0 == 0:
        raise ValueError("with_more_objects grows an existing object head; this model has none")
    new = make_model(replace(model.cfg, num_aux_objects=n), model.tokenizer, with_world_model=model.with_world_model)
    old = model.state_dict()
    grown = {}  # name -> the old tensor: the leading part of the new, larger one
    for name, tensor in new.state_dict().items():
        if name in old and old[name].shape != tensor.shape:
            grown[name] = old.pop(name)
    report = load_into(new, old)
    if report.unexpected or sorted(grown) != sorted(report.missing):
        raise KeyError(f"growing the object head from {n0} to {n} objects: {report}, resized {sorted(grown)}")
    own = new.state_dict()
    with torch.no_grad():
        for name, tensor in grown.items():
            target = own[name]
            if name.startswith("action_model.object_encoder") and name.endswith("weight"):  # (hidden, 3N): new inputs
                target.zero_()
                target[:, :tensor.shape[1]].copy_(tensor)
            elif name in ("action_model.object_mean", "action_model.object_std"):  # (3N,)
                stats = np.asarray(objects["mean_m" if name.endswith("mean") else "std_m"], np.float32).reshape(-1)
                target.copy_(torch.from_numpy(stats))
                target[:tensor.shape[0]].copy_(tensor)
            else:  # the object head's last layer, (3N, hidden) and (3N,): new outputs keep their fresh init
                target[:tensor.shape[0]].copy_(tensor)
    if new.action_model.object_encoder is not None:
        new.action_model.object_std.clamp_(min=1e-3)
    return new


def build_model(args: TrainArgs, cfg: VLAJEPAConfig) -> VLAJEPA:
    torch.manual_seed(args.train.seed)
    model = _build_model(args, cfg)
    return with_object_input(model) if args.action_head_objects else model


def _build_model(args: TrainArgs, cfg: VLAJEPAConfig) -> VLAJEPA:
    if args.init_from and is_bundle(args.init_from):
        model, _, report = model_from_bundle(args.init_from, cfg.num_aux_objects, seed=args.train.seed)
        print(f"{args.init_from}: {report}", flush=True)
        return with_sizes(model, args.image_size_px, args.max_prompt_len)
    if args.init_from:
        model, _, _, _ = load_checkpoint(args.init_from)
        return with_sizes(model, args.image_size_px, args.max_prompt_len)
    if args.public_pt:
        tok_json = Path(args.qwen_folder) / "tokenizer.json" if args.qwen_folder else None
        model, _, _, _, report = load_public_checkpoint(args.public_pt, tok_json, cfg)
        print(f"loaded {args.public_pt}: {report}")
        return model
    cfg = config_from_hf_folders(cfg, args.qwen_folder, args.vjepa_folder)
    tokenizer = load_tokenizer(str(Path(args.qwen_folder) / "tokenizer.json"), cfg.max_action_tokens) \
        if args.qwen_folder else None
    model = make_model(cfg, tokenizer)
    if args.qwen_folder:
        check_qwen_preprocessor(args.qwen_folder, cfg)
        print(f"Qwen3-VL weights: {load_qwen3vl_folder(model.vlm, args.qwen_folder)}")
    if args.vjepa_folder:
        print(f"V-JEPA2 weights: {load_vjepa2_folder(model.vj_encoder, args.vjepa_folder)}")
    return model


def train(args: TrainArgs) -> dict:
    """Run training; returns {"checkpoint": path, "metrics": last metrics row, "samples_per_s": float}."""
    tcfg = args.train
    if args.threads:
        torch.set_num_threads(args.threads)
    world_env = int(os.environ.get("WORLD_SIZE", "1"))
    if world_env > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
    rank, world = dist_info()
    for name, size in (("batch_size", tcfg.batch_size), ("video_batch_size", tcfg.video_batch_size)):
        if (name == "batch_size" or tcfg.stage == 1) and size % (world * tcfg.grad_accum_steps) != 0:
            raise ValueError(f"{name}={size} must divide by world_size*grad_accum_steps="
                             f"{world * tcfg.grad_accum_steps}")
    device = torch.device(args.device if not args.device.startswith("cuda") else f"cuda:{rank}")
    out = Path(args.out_dir)
    cfg = get_config(args.preset)
    if args.max_prompt_len:
        cfg = replace(cfg, max_prompt_len=args.max_prompt_len)
    if args.image_size_px:
        cfg = replace(cfg, image_size=args.image_size_px)
    source = _robot_source(args, cfg)
    if tcfg.object_loss_weight > 0 and not (args.resume or (args.init_from and not is_bundle(args.init_from))):
        objects = source_objects(source)
        if not objects:
            raise ValueError("--train.object-loss-weight > 0 needs a dataset with object positions (--data from "
                             "vla-jepa bags-to-dataset of bags that recorded /sim/object_poses)")
        cfg = replace(cfg, num_aux_objects=len(objects["names"]))

    if args.resume:
        model, cfg, stats, _ = load_checkpoint(args.resume)
    else:
        model = build_model(args, cfg)
        objects = source_objects(source)
        if tcfg.object_loss_weight > 0 and objects and model.object_head is not None:
            grown = with_more_objects(model, objects)
            if grown is not model:
                print(f"object head: {model.cfg.num_aux_objects} -> {grown.cfg.num_aux_objects} objects "
                      f"(the dataset's {objects['names'][model.cfg.num_aux_objects:]} added)", flush=True)
            model = grown
        cfg = model.cfg
        stats = _stats_for(source, args)
        summary = state_stats(stats)
        head = model.action_model
        never_set = bool((head.state_mean == 0).all() and (head.state_std == 1).all())
        if args.init_from and args.keep_action_stats and not never_set:
            stats = _kept_action_stats(stats, load_stats(Path(args.init_from) / STATS),
                                       args.init_from)
        # a fine-tune keeps the statistics its model learnt with; a model that never had any (new, or pretrained
        # without actions) takes this dataset's
        if args.normalize_state and cfg.state_dim and summary and tcfg.action_loss_weight > 0 and never_set:
            head.set_state_normalization(summary["mean"], summary["std"])
        if head.object_encoder is not None and objects and bool((head.object_mean == 0).all()
                                                                and (head.object_std == 1).all()):
            head.set_object_normalization(objects["mean_m"], objects["std_m"])
    if tcfg.object_loss_weight > 0 and model.object_head is None:
        raise ValueError("--train.object-loss-weight > 0 but the model has no object head (it was made without one)")
    model.to(device).train()
    wrapped: torch.nn.Module = model
    if tcfg.fsdp:
        from torch.distributed.fsdp import fully_shard

        for layer in list(model.vlm.language_model.layers) + list(model.vlm.visual.blocks):
            fully_shard(layer)
        wrapped = fully_shard(model)
    elif world > 1:
        # unused parameters: the action head on video steps, the predictor without the JEPA loss
        unused = (tcfg.stage == 1 or not tcfg.use_wm_loss or tcfg.action_loss_weight == 0
                  or (model.object_head is not None and tcfg.object_loss_weight == 0))
        wrapped = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=unused)
    head = model.action_model
    # the object targets keep the normalisation the action head converts back to metres (fixed once set)
    object_norm = (head.object_mean.view(-1, 3).cpu().numpy(), head.object_std.view(-1, 3).cpu().numpy()) \
        if head.object_encoder is not None else None
    robot_ds = RobotDataset(source, cfg, model.tokenizer, model.robot_layout, stats, drop_idle=args.drop_idle_frames,
                            image_shift_px=args.image_shift_px, grasp_repeat=args.grasp_repeat,
                            grasp_window=args.grasp_window, object_norm=object_norm)
    if robot_ds.grasp_samples and rank == 0:
        print(f"grasp oversampling: {robot_ds.grasp_samples} extra samples ({args.grasp_repeat}x the "
              f"{args.grasp_window} steps up to each close), {len(robot_ds)} in all", flush=True)
    video_ds = None
    if tcfg.stage == 1:
        if not args.video_dir:
            raise ValueError("stage 1 needs --video-dir (human videos) besides robot data")
        video_ds = VideoDataset(VideoFolderSource(args.video_dir, args.video_labels), cfg, model.tokenizer,
                                model.video_layout, window_seed=tcfg.seed)
    opt, sched = build_optimizer(model, tcfg)
    params = [p for g in opt.param_groups for p in g["params"]]
    robot_sampler = GlobalSampler(len(robot_ds), tcfg.seed)
    video_sampler = GlobalSampler(len(video_ds), tcfg.seed + 1) if video_ds else None
    step = 0
    if args.resume:
        st = torch.load(Path(args.resume) / TRAINER_STATE, weights_only=False)
        if tcfg.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(model, opt, st["optimizer"], options=StateDictOptions(full_state_dict=True))
        else:
            opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        robot_sampler.load_state_dict(st["robot_sampler"])
        if video_sampler and st.get("video_sampler"):
            video_sampler.load_state_dict(st["video_sampler"])
        set_rng_state(st["rng"][rank] if isinstance(st["rng"], list) else st["rng"])
        step = st["step"]
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.jsonl"
    bar = tqdm(total=tcfg.total_steps, initial=step, disable=rank != 0 or not args.progress, desc="train",
               dynamic_ncols=True)
    last: dict = {}
    t_start, samples_done = time.perf_counter(), 0
    local = tcfg.batch_size // world
    while step < tcfg.total_steps:
        kinds = ["robot", "video"] if tcfg.stage == 1 else ["robot"]
        for kind in kinds:
            if step >= tcfg.total_steps:
                break
            t0 = time.perf_counter()
            gb = tcfg.video_batch_size if kind == "video" else tcfg.batch_size
            lb = gb // world
            sampler, ds = (robot_sampler, robot_ds) if kind == "robot" else (video_sampler, video_ds)
            idx = sampler.next(gb)
            mine = list(range(rank * lb, (rank + 1) * lb))
            samples = []
            for pos in mine:
                s = ds[idx[pos]]
                if kind == "robot":
                    s["sample_seed"] = torch.tensor(tcfg.seed * 1_000_003 + step * gb + pos, dtype=torch.long)
                samples.append(s)
            mb_size = lb // tcfg.grad_accum_steps
            micro = [collate(samples[i:i + mb_size]) for i in range(0, lb, mb_size)]
            if step < 2:  # guard: the special tokens sit where the static layout says
                model.check_prompt(micro[0]["input_ids"], video_prompt=kind == "video")
            opt.zero_grad(set_to_none=True)
            totals = train_step(wrapped, micro, kind, tcfg, lb, device)
            gnorm = torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip) if tcfg.grad_clip > 0 else torch.tensor(0.)
            opt.step()
            sched.step()
            step += 1
            if world > 1:  # report global means
                vec = torch.tensor([totals[k] for k in sorted(totals)], dtype=torch.float64)
                dist.all_reduce(vec)
                totals = dict(zip(sorted(totals), (vec / world).tolist()))
            dt = time.perf_counter() - t0
            samples_done += gb
            row = {"step": step, "kind": kind, **{k: round(v, 6) for k, v in totals.items()},
                   "grad_norm": float(gnorm), "samples_per_s": gb / dt,
                   **{f"lr_{g['name']}": g["lr"] for g in opt.param_groups}}
            last = row
            if rank == 0:
                if step % tcfg.log_every == 0 or step == tcfg.total_steps:
                    with open(metrics_path, "a") as f:
                        f.write(json.dumps(row) + "\n")
                bar.set_postfix(loss=f"{totals['loss']:.4f}", sps=f"{gb / dt:.1f}", kind=kind)
                bar.update(1)
            if tcfg.save_every and step % tcfg.save_every == 0 and step < tcfg.total_steps:
                _save(out / f"step_{step:06d}", model, stats, opt, sched, robot_sampler, video_sampler, step, tcfg,
                      rank, world)
    bar.close()
    ckpt = _save(out / f"step_{step:06d}", model, stats, opt, sched, robot_sampler, video_sampler, step, tcfg, rank,
                 world)
    if rank == 0 and metrics_path.exists():
        plot_metrics(metrics_path, out / "metrics.png")
    elapsed = time.perf_counter() - t_start
    return {"checkpoint": ckpt, "metrics": last, "samples_per_s": samples_done / max(elapsed, 1e-9), "model": model}


def _save(path: Path, model, stats, opt, sched, robot_sampler, video_sampler, step, tcfg, rank, world) -> Path:
    model_sd = None
    opt_sd = None
    if tcfg.fsdp:  # gather full (unsharded) states on every rank (collective), rank 0 writes them
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                             get_optimizer_state_dict)

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd = get_model_state_dict(model, options=opts)
        opt_sd = get_optimizer_state_dict(model, opt, options=opts)
    rngs = [rng_state()]
    if world > 1:
        gathered: list = [None] * world
        dist.all_gather_object(gathered, rngs[0])
        rngs = gathered
    if rank == 0:
        state = {"optimizer": opt_sd if opt_sd is not None else opt.state_dict(), "scheduler": sched.state_dict(), "step": step,
                 "robot_sampler": robot_sampler.state_dict(),
                 "video_sampler": video_sampler.state_dict() if video_sampler else None,
                 "rng": rngs if world > 1 else rngs[0]}
        save_checkpoint(path, model, stats, state, tcfg, state_dict=model_sd)
        (path.parent / "latest.txt").write_text(path.name)
    if world > 1:
        dist.barrier()
    return path


def main() -> None:
    import tyro

    args = tyro.cli(TrainArgs, prog="vla-jepa-train")
    result = train(args)
    rank, _ = dist_info()
    if rank == 0:
        print(f"checkpoint: {result['checkpoint']}  samples/s: {result['samples_per_s']:.1f}  "
              f"world_size={dist_info()[1]}")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
