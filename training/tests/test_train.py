"""Training: overfitting, exact resume, stage 1 alternation, the no-JEPA ablation flag."""

import json

import pytest
import torch
from safetensors.torch import load_file

from vj_helpers import write_video_folder
from vla_jepa.config import TrainConfig
from vla_jepa.train import TrainArgs, lr_lambda_factory, train


def _args(tmp_path, name, **train_kw):
    tc = dict(total_steps=4, batch_size=4, warmup_steps=2, lr_vlm=1e-3, lr_action_head=1e-3, lr_predictor=1e-3,
              min_lr=1e-4)
    tc.update(train_kw)
    return TrainArgs(out_dir=str(tmp_path / name), synthetic_episodes=2, train=TrainConfig(**tc), progress=False)


def test_tiny_overfits_small_dataset(tmp_path):
    args = _args(tmp_path, "overfit", total_steps=150, batch_size=4, warmup_steps=5, min_lr=1e-4, use_wm_loss=False)
    args.synthetic_episodes, args.synthetic_length = 1, 8
    train(args)
    rows = [json.loads(x) for x in (tmp_path / "overfit" / "metrics.jsonl").read_text().splitlines()]
    first = sum(r["action_loss"] for r in rows[:5]) / 5
    last = sum(r["action_loss"] for r in rows[-10:]) / 10
    assert last < first / 6, f"action loss {first:.3f} -> {last:.3f}"
    assert (tmp_path / "overfit" / "metrics.png").exists()
    assert "wm_loss" not in rows[-1]  # ablation flag: no JEPA objective


def test_resume_is_bit_identical(tmp_path):
    full = train(_args(tmp_path, "full", total_steps=4, save_every=2))
    resumed = train(TrainArgs(out_dir=str(tmp_path / "resumed"), synthetic_episodes=2,
                              train=_args(tmp_path, "x", total_steps=4).train, progress=False,
                              resume=str(tmp_path / "full" / "step_000002")))
    a = load_file(str(full["checkpoint"] / "model.safetensors"))
    b = load_file(str(resumed["checkpoint"] / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    ra = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in ra[2:]] == [r["loss"] for r in rb]
    sa = torch.load(full["checkpoint"] / "trainer_state.pt", weights_only=False)
    sb = torch.load(resumed["checkpoint"] / "trainer_state.pt", weights_only=False)
    assert sa["robot_sampler"] == sb["robot_sampler"] and sa["scheduler"] == sb["scheduler"]


def test_stage1_alternates_robot_and_video_batches(tmp_path):
    videos = write_video_folder(tmp_path / "videos")
    args = _args(tmp_path, "stage1", stage=1, total_steps=4, batch_size=2, video_batch_size=2)
    args.video_dir = str(videos)
    train(args)
    rows = [json.loads(x) for x in (tmp_path / "stage1" / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["robot", "video", "robot", "video"]
    assert "action_loss" in rows[0] and "action_loss" not in rows[1] and "wm_loss" in rows[1]


def test_schedule_warmup_then_cosine_to_min():
    tc = TrainConfig(total_steps=100, warmup_steps=10, lr_predictor=3e-5, min_lr=1e-6)
    f = lr_lambda_factory(tc)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(100) == pytest.approx(1e-6 / 3e-5) and f(55) < f(20)


def test_grad_accumulation_matches_full_batch(tmp_path):
    a = train(_args(tmp_path, "acc1", total_steps=2, batch_size=4, grad_accum_steps=1))
    b = train(_args(tmp_path, "acc2", total_steps=2, batch_size=4, grad_accum_steps=2))
    sa = load_file(str(a["checkpoint"] / "model.safetensors"))
    sb = load_file(str(b["checkpoint"] / "model.safetensors"))
    assert max((sa[k] - sb[k]).abs().max().item() for k in sa) < 1e-5


def test_bf16_autocast_step_runs(tmp_path):
    r = train(_args(tmp_path, "bf16", total_steps=1, batch_size=2, bf16=True))
    m = r["metrics"]
    assert m["loss"] == m["loss"] and m["loss"] < 100  # finite


def test_train_from_hf_backbone_folders(tmp_path):
    """The paper recipe's entry: VLM and target encoder weights from HF folders (here tiny random ones)."""
    transformers = pytest.importorskip("transformers")
    from test_parity_qwen3vl import hf_config

    from vla_jepa.checkpoint import load_checkpoint
    from vla_jepa.config import get_config
    from vla_jepa.prompt import build_tiny_tokenizer

    cfg = get_config("tiny")
    tok = build_tiny_tokenizer()
    hf_vlm = transformers.Qwen3VLForConditionalGeneration(hf_config(cfg, tok))
    hf_vlm.save_pretrained(tmp_path / "qwen")
    tok.save(str(tmp_path / "qwen" / "tokenizer.json"))
    hf_enc = transformers.VJEPA2Model(transformers.VJEPA2Config(
        hidden_size=cfg.vjepa.hidden_size, num_hidden_layers=cfg.vjepa.num_layers,
        num_attention_heads=cfg.vjepa.num_heads, crop_size=cfg.vjepa.crop_size, frames_per_clip=8,
        pred_hidden_size=32, pred_num_hidden_layers=1, pred_num_attention_heads=2))
    hf_enc.save_pretrained(tmp_path / "vjepa")
    args = _args(tmp_path, "hf", total_steps=1, batch_size=2)
    args.qwen_folder, args.vjepa_folder = str(tmp_path / "qwen"), str(tmp_path / "vjepa")
    r = train(args)
    model = load_checkpoint(r["checkpoint"])[0]
    ref = hf_enc.state_dict()["encoder.layer.0.attention.query.weight"]
    assert torch.equal(model.vj_encoder.layer[0].attention.query.weight, ref)  # frozen: unchanged by training


def test_max_prompt_len_override_reaches_the_checkpoint(tmp_path):
    """Long instructions (LIBERO with the character tokenizer) need a longer prompt than the preset's."""
    from vla_jepa.checkpoint import load_checkpoint

    args = _args(tmp_path, "long_prompt", total_steps=1, batch_size=2)
    args.max_prompt_len = 320
    train(args)
    step = sorted((tmp_path / "long_prompt").glob("step_*"))[-1]
    model, cfg, _, _ = load_checkpoint(step, with_world_model=False)
    assert cfg.max_prompt_len == 320 and model.robot_layout.max_len == 320


def test_object_loss_teaches_where_the_square_is(tmp_path):
    """The auxiliary object head (training only) learns the synthetic square's position from the images."""
    args = _args(tmp_path, "objects", total_steps=60, batch_size=8, warmup_steps=5, use_wm_loss=False,
                 object_loss_weight=1.0)
    args.synthetic_episodes, args.synthetic_length = 6, 8
    result = train(args)
    assert result["model"].cfg.num_aux_objects == 1
    rows = [json.loads(x) for x in (tmp_path / "objects" / "metrics.jsonl").read_text().splitlines()]
    first = sum(r["object_loss"] for r in rows[:5]) / 5
    last = sum(r["object_loss"] for r in rows[-10:]) / 10
    # targets are z-scored: predicting their mean scores ~ 2/3 (x, y vary; z is 0); learning must beat that
    assert last < 0.3 and last < first / 2, f"object loss {first:.3f} -> {last:.3f}"
    assert "object_head" not in {name.split(".")[0] for name in result["model"].inference_module().state_dict()}


def test_object_loss_without_object_positions_is_a_clear_error(tmp_path):
    from vla_jepa.data import synthetic_episodes, write_episode_dataset

    eps = synthetic_episodes(2, length=8)
    for e in eps:
        e.objects, e.object_names = None, ()
    write_episode_dataset(tmp_path / "ds", eps, cameras=["front", "wrist"], fps=10.0)
    args = _args(tmp_path, "noobj", object_loss_weight=1.0)
    args.synthetic_episodes, args.data = 0, str(tmp_path / "ds")
    with pytest.raises(ValueError, match="object positions"):
        train(args)


def test_state_is_normalised_inside_the_model_with_the_dataset_statistics(tmp_path):
    from vla_jepa.normalize import state_stats

    result = train(_args(tmp_path, "norm", total_steps=1))
    head = result["model"].action_model
    stats = state_stats(json.loads((result["checkpoint"] / "dataset_statistics.json").read_text()))
    assert torch.allclose(head.state_mean, torch.tensor(stats["mean"], dtype=torch.float32))
    assert torch.allclose(head.state_std, torch.tensor(stats["std"], dtype=torch.float32).clamp_min(1e-2))
    # the normalised head on a raw state == an identity-normalised head on the state normalised by hand
    raw = torch.randn(3, head.state_mean.numel())
    emb = torch.randn(3, 32, result["model"].cfg.text.hidden_size)
    noise = torch.randn(3, result["model"].cfg.horizon, result["model"].cfg.action_dim)
    with torch.no_grad():
        a = head.sample(emb, noise, raw)
        by_hand = (raw - head.state_mean) / head.state_std
        head.set_state_normalization(torch.zeros_like(head.state_mean), torch.ones_like(head.state_std))
        b = head.sample(emb, noise, by_hand)
    assert torch.allclose(a, b, atol=1e-5)
    args = _args(tmp_path, "raw", total_steps=1)  # and the flag turns it off
    args.normalize_state = False
    off = train(args)
    assert torch.equal(off["model"].action_model.state_mean, torch.zeros_like(head.state_mean))


def test_object_only_pretraining_leaves_the_action_head_alone(tmp_path):
    """action_loss_weight=0 (rendered layouts without actions): only the backbone and the object head learn, and
    the state statistics stay unset so the demonstrations that follow (--init-from) set them."""
    from vla_jepa.model import make_model

    args = _args(tmp_path, "pre", total_steps=3, use_wm_loss=False, action_loss_weight=0.0, object_loss_weight=1.0)
    result = train(args)
    rows = [json.loads(x) for x in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()]
    assert all("action_loss" not in r and "object_loss" in r for r in rows)
    torch.manual_seed(0)
    fresh = make_model(result["model"].cfg)  # the same seed and config: the weights training started from
    trained = result["model"].action_model.state_dict()
    assert all(torch.equal(v, fresh.action_model.state_dict()[k]) for k, v in trained.items())
    assert not torch.equal(result["model"].vlm.visual.patch_embed.proj.weight, fresh.vlm.visual.patch_embed.proj.weight)
    demo = _args(tmp_path, "demo", total_steps=1)
    demo.init_from = str(result["checkpoint"])
    head = train(demo)["model"].action_model
    assert not torch.equal(head.state_std, torch.ones_like(head.state_std))  # the demonstrations' statistics


def test_nothing_to_train_is_refused():
    with pytest.raises(ValueError, match="nothing to train"):
        TrainConfig(action_loss_weight=0.0, use_wm_loss=False)


def test_training_on_two_datasets_uses_the_statistics_of_both(tmp_path):
    """--data A B trains on every episode of both, normalised with statistics over all of them (not A's file)."""
    import numpy as np
    from vla_jepa.checkpoint import STATS
    from vla_jepa.data import synthetic_episodes, write_episode_dataset
    from vla_jepa.normalize import compute_stats

    a_eps = synthetic_episodes(2, length=8, image_size=64, seed=1)
    b_eps = synthetic_episodes(2, length=8, image_size=64, seed=2)
    for ep in b_eps:
        ep.actions[:, :3] *= 3.0  # another scale: A's statistics alone would be wrong
    a = write_episode_dataset(tmp_path / "a", a_eps, cameras=["front", "wrist"], fps=10)
    b = write_episode_dataset(tmp_path / "b", b_eps, cameras=["front", "wrist"], fps=10)
    args = _args(tmp_path, "two", total_steps=2, batch_size=4, use_wm_loss=False)
    args.synthetic_episodes, args.data = 0, (str(a), str(b))
    out = train(args)
    saved = json.loads((out["checkpoint"] / STATS).read_text())
    expected = compute_stats(np.concatenate([e.actions for e in a_eps + b_eps]),
                             np.concatenate([e.states for e in a_eps + b_eps]), 4)
    saved_franka = next(iter(saved.values()))
    expected_franka = next(iter(expected.values()))
    for key in ("mean", "std", "q01", "q99"):
        np.testing.assert_allclose(saved_franka["action"][key], expected_franka["action"][key], rtol=1e-5, atol=1e-7)


def test_a_checkpoint_fine_tunes_at_a_finer_picture(tmp_path):
    """--init-from with --image-size-px/--max-prompt-len: every weight carries over unchanged to the new sizes
    (interpolated vision position embeddings, a longer prompt) and training runs on the larger images."""
    from vla_jepa.checkpoint import load_checkpoint
    from vla_jepa.train import with_sizes

    first = train(_args(tmp_path, "coarse", total_steps=1, use_wm_loss=False))
    model, cfg, _, _ = load_checkpoint(first["checkpoint"])
    assert with_sizes(model) is model and with_sizes(model, cfg.image_size) is model
    fine = with_sizes(model, 192, 320)
    assert (fine.cfg.image_size, fine.cfg.max_prompt_len, fine.cfg.image_tokens_per_view) == (192, 320, 36)
    old = model.state_dict()
    assert all(torch.equal(v, old[k]) for k, v in fine.state_dict().items() if k in old)
    assert set(old) <= set(fine.state_dict())
    args = _args(tmp_path, "fine", total_steps=1, use_wm_loss=False)
    args.init_from, args.image_size_px, args.max_prompt_len = str(first["checkpoint"]), 192, 320
    out = train(args)
    _, saved, _, _ = load_checkpoint(out["checkpoint"])
    assert (saved.image_size, saved.max_prompt_len) == (192, 320)


def test_a_fine_tune_keeps_the_action_statistics_of_its_model(tmp_path):
    """--init-from a model trained on actions normalises the new targets with that model's action min/max: the new
    data's wider range (a few relabelled outliers are enough) would change what every output of the head means.
    --no-keep-action-stats takes the data's range."""
    from vla_jepa.checkpoint import STATS
    from vla_jepa.data import synthetic_episodes, write_episode_dataset

    first = train(_args(tmp_path, "first", total_steps=1, use_wm_loss=False))
    learnt = next(iter(json.loads((first["checkpoint"] / STATS).read_text()).values()))["action"]
    eps = synthetic_episodes(2, length=8, image_size=64, seed=3)
    for ep in eps:
        ep.actions[:, :3] *= 5.0
    wide = write_episode_dataset(tmp_path / "wide", eps, cameras=["front", "wrist"], fps=10)
    for keep in (True, False):
        args = _args(tmp_path, f"tune_{keep}", total_steps=1, use_wm_loss=False)
        args.synthetic_episodes, args.data = 0, (str(wide),)
        args.init_from, args.keep_action_stats = str(first["checkpoint"]), keep
        saved = next(iter(json.loads((train(args)["checkpoint"] / STATS).read_text()).values()))["action"]
        assert (saved["min"] == learnt["min"] and saved["max"] == learnt["max"]) == keep, (keep, saved, learnt)


def test_a_model_grows_the_objects_a_dataset_adds_without_changing_its_policy():
    """--init-from on a dataset that tracks one more object (bags-to-dataset --named-object): the old objects keep
    their weights and normalisation, the new one gets an output of the object head, the dataset's statistics and
    zero weight in the action head's object encoder, so the policy's chunks are unchanged until it trains."""
    from vla_jepa.config import get_config, replace
    from vla_jepa.model import make_model
    from vla_jepa.train import with_more_objects

    torch.manual_seed(0)
    cfg = replace(get_config("tiny"), num_aux_objects=2, action_head_objects=True)
    model = make_model(cfg, with_world_model=False)
    model.action_model.set_object_normalization([[0.5, 0.0, 0.02], [0.6, 0.1, 0.0]], [[0.1, 0.1, 0.01]] * 2)
    with torch.no_grad():  # a trained encoder: non-zero weights everywhere
        for p in model.action_model.object_encoder.parameters():
            p.normal_(0, 0.1)
    info = {"names": ["a", "b", "named_object"], "mean_m": [[9.0] * 3, [9.0] * 3, [0.45, -0.1, 0.02]],
            "std_m": [[1.0] * 3, [1.0] * 3, [0.05, 0.12, 0.0]]}
    assert with_more_objects(model, {**info, "names": ["a", "b"]}) is model
    grown = with_more_objects(model, info)
    assert grown.cfg.num_aux_objects == 3 and model.cfg.num_aux_objects == 2
    head, old = grown.action_model, model.action_model
    assert torch.equal(head.object_mean[:6], old.object_mean) and torch.equal(head.object_std[:6], old.object_std)
    assert head.object_mean[6:].tolist() == pytest.approx([0.45, -0.1, 0.02])
    assert head.object_std[6:].tolist() == pytest.approx([0.05, 0.12, 1e-3])  # floored like set_object_normalization
    emb = torch.randn(4, 32, cfg.text.hidden_size)
    noise = torch.randn(4, cfg.horizon, cfg.action_dim)
    state = torch.randn(4, cfg.state_dim)
    with torch.no_grad():
        estimate = grown.object_estimate(emb)
        assert torch.allclose(estimate[:, :6], model.object_estimate(emb), atol=1e-6)  # other matmul widths
        assert estimate[:, 6:].abs().sum() > 0  # a fresh output, not a copy of zeros
        anything = torch.randn(4, 3)  # whatever the new estimate says, the chunks stay those of the old model
        before = old.sample(emb, noise, state, estimate[:, :6])
        after = head.sample(emb, noise, state, torch.cat([estimate[:, :6], anything], dim=1))
    assert torch.allclose(before, after, atol=1e-6)
    with pytest.raises(ValueError, match="has none"):
        with_more_objects(make_model(replace(cfg, num_aux_objects=0, action_head_objects=False),
                                     with_world_model=False), info)


def _released_run(tmp_path, with_state=True):
    """A tiny release in the public code's layout (names from test_import's writer), 8-d raw state."""
    import yaml

    from test_import import write_official
    from vla_jepa.config import get_config
    from vla_jepa.model import make_model

    torch.manual_seed(0)
    pt = write_official(make_model(get_config("tiny")), tmp_path / "release")
    if not with_state:
        data = yaml.safe_load((tmp_path / "release" / "config.yaml").read_text())
        data["datasets"]["vla_data"]["with_state"] = False
        (tmp_path / "release" / "config.yaml").write_text(yaml.safe_dump(data))
    return pt


def test_released_weights_keep_raw_state_unless_asked(tmp_path):
    """The public code trained on raw state and has no state statistics, so its weights load with identity state
    buffers. A fine-tune keeps feeding raw state (and records that), unless --normalize-released-state is given."""
    pytest.importorskip("transformers")
    from safetensors import safe_open

    pt = _released_run(tmp_path)
    args = _args(tmp_path, "ft", total_steps=1, batch_size=2)
    args.preset, args.public_pt = "tiny", str(pt)
    result = train(args)
    head = result["model"].action_model
    assert torch.equal(head.state_mean, torch.zeros_like(head.state_mean))
    assert torch.equal(head.state_std, torch.ones_like(head.state_std))
    with safe_open(str(result["checkpoint"] / "model.safetensors"), framework="pt") as f:
        assert f.metadata()["state_input"] == "raw"
    again = _args(tmp_path, "ft2", total_steps=1, batch_size=2)  # a fine-tune of that fine-tune: still raw
    again.init_from = str(result["checkpoint"])
    assert torch.equal(train(again)["model"].action_model.state_std, torch.ones_like(head.state_std))
    asked = _args(tmp_path, "ft_norm", total_steps=1, batch_size=2)
    asked.preset, asked.public_pt, asked.normalize_released_state = "tiny", str(pt), True
    assert not torch.equal(train(asked)["model"].action_model.state_std, torch.ones_like(head.state_std))


def test_stage1_without_state_then_stage2_with_it(tmp_path):
    """The official stage 1 has no state token (--state-dim 0); stage 2 from it adds a new state encoder and keeps
    every other tensor."""
    videos = write_video_folder(tmp_path / "videos")
    s1 = _args(tmp_path, "s1", stage=1, total_steps=2, batch_size=2, video_batch_size=2)
    s1.video_dir, s1.state_dim = str(videos), 0
    r1 = train(s1)
    assert r1["model"].cfg.state_dim == 0 and r1["model"].action_model.state_encoder is None
    s2 = _args(tmp_path, "s2", total_steps=1, batch_size=2, lr_vlm=1e-12, lr_action_head=1e-12, lr_predictor=1e-12)
    s2.init_from, s2.state_dim = str(r1["checkpoint"]), 8
    before = load_file(str(r1["checkpoint"] / "model.safetensors"))
    r2 = train(s2)
    assert r2["model"].cfg.state_dim == 8 and r2["model"].action_model.state_encoder is not None
    after = r2["model"].state_dict()
    k = "action_model.model.transformer_blocks.0.attn1.to_q.weight"
    assert torch.allclose(after[k], before[k], atol=1e-6)


def test_a_human_video_gets_a_fresh_window_each_time(tmp_path, tiny_model):
    """The public loader draws a random 8-frame window every time a video is read; ds[(i, draw)] does that,
    reproducibly (the trainer passes its sample counter as draw)."""
    from vla_jepa.data import VideoDataset, VideoFolderSource

    root = write_video_folder(tmp_path / "v")
    ds = VideoDataset(VideoFolderSource(root), tiny_model.cfg, tiny_model.tokenizer, tiny_model.video_layout)
    frames, _ = ds.source.load(0)
    assert len(frames) >= tiny_model.cfg.num_frames + 4
    clips = [ds[(0, draw)]["video"] for draw in range(12)]
    distinct = {c[0].numpy().tobytes() for c in clips}
    assert len(distinct) >= 3
    assert torch.equal(ds[(0, 7)]["video"], clips[7])  # reproducible (exact resume)


def test_official_recipes_are_named():
    """--recipe official-stage1 / official-stage2 give the public configs' numbers (vlajepa_cotrain.yaml: 50k
    iterations of robot + video steps, 16 + 16 per GPU x 8, no state; vlajepa_robot_ft.yaml: 30k steps, 32 x 8, raw
    8-d state; both 5000 warmup steps, lrs 1e-5 / 1e-4 / 3e-5, min 1e-6, clip 1, bf16)."""
    from vla_jepa.train import apply_recipe

    s1 = apply_recipe(TrainArgs(recipe="official-stage1"))
    assert (s1.train.stage, s1.train.total_steps, s1.train.batch_size, s1.train.video_batch_size) == (1, 100_000, 128,
                                                                                                      128)
    assert s1.state_dim == 0 and s1.train.warmup_steps == 5000 and s1.train.bf16
    s2 = apply_recipe(TrainArgs(recipe="official-stage2"))
    assert (s2.train.stage, s2.train.total_steps, s2.train.batch_size, s2.state_dim) == (2, 30_000, 256, 8)
    assert s2.normalize_state is False and (s2.train.lr_vlm, s2.train.lr_action_head, s2.train.lr_predictor,
                                            s2.train.min_lr, s2.train.grad_clip) == (1e-5, 1e-4, 3e-5, 1e-6, 1.0)
    with pytest.raises(ValueError, match="known recipes"):
        apply_recipe(TrainArgs(recipe="paper"))
