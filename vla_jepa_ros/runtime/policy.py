"""`Policy.infer(observation) -> ActionChunk`: the one inference contract, and `ModelPolicy`, which runs a model
bundle on any backend.

ModelPolicy.infer = preprocess (order cameras as the bundle says, OpenCV resize, (1, V, 3, S, S) float [0, 1])
                  -> tokenise the instruction (cached: only a changed instruction is re-tokenised)
                  -> backend.run (the bundle's graph(s); noise for the Euler steps from a seeded generator)
                  -> check finite (NaN/Inf raise NonFiniteActionError; never returned)
                  -> de-normalise to robot units -> ActionChunk.

A backend is any object with `name: str` and
    run(inputs: dict[str, np.ndarray]) -> (actions_normalized (1, horizon, action_dim) float32, {stage: ms})
where inputs are the bundle's graph inputs: images (1, V, 3, S, S) float32, input_ids (1, L) int64,
attention_mask (1, L) int64, state (1, state_dim) float32, noise (1, horizon, action_dim) float32. A backend with
`resizes_frames = True` (torch on CUDA) gets the camera frames instead of `images`: frames, a tuple of V (H, W, 3)
uint8 arrays, whenever every side shrinks; it resizes them on its device (the same INTER_AREA to
1/255) and reports the time as stage `resize_ms`, which counts as preprocessing.
"""
from __future__ import annotations

import time
from typing import Protocol

import numpy as np

from ..core.images import check_rgb, to_model_input
from ..core.types import ActionChunk, Observation
from .bundle import Bundle, BundleError


class Policy(Protocol):
    model_id: str

    def infer(self, observation: Observation) -> ActionChunk: ...


class Backend(Protocol):
    name: str

    def run(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, float]]: ...


class NonFiniteActionError(RuntimeError):
    """The model produced NaN or Inf; the chunk is dropped."""


def check_bundle_tokenizer(bundle: Bundle, tokenizer) -> None:
    """Refuse a bundle whose tokenizer.json is not the tokenizer its manifest records (bundles made before the
    record existed are not checked)."""
    from vla_jepa.qwen_tokenizer import tokenizer_name, tokenizer_sha256

    want = bundle.manifest.prompt.get("tokenizer")
    if not want:
        return
    sha = tokenizer_sha256(tokenizer)
    if sha != want.get("sha256"):
        raise BundleError(f"{bundle.tokenizer_path}: a {tokenizer_name(tokenizer)} tokenizer (sha256 {sha[:12]}...) "
                          f"but the manifest records the {want.get('name')} tokenizer (sha256 "
                          f"{str(want.get('sha256'))[:12]}...): re-export the bundle with `vla-jepa export` or "
                          "`vla-jepa import`")


class PromptCache:
    """Tokenises an instruction into the bundle's fixed-length prompt, re-tokenising only when it changes."""

    def __init__(self, bundle: Bundle) -> None:
        from vla_jepa.prompt import encode_instruction, load_tokenizer  # numpy + tokenizers only

        p = bundle.manifest.prompt
        self._encode = encode_instruction
        self._tokenizer = load_tokenizer(str(bundle.tokenizer_path), int(p.get("max_action_tokens", 28)))
        check_bundle_tokenizer(bundle, self._tokenizer)
        self._kwargs = dict(max_len=int(p["max_prompt_len"]), num_views=int(p["num_views"]),
                            image_tokens_per_view=int(p["image_tokens_per_view"]),
                            num_transitions=int(p["num_transitions"]), latent_per_step=int(p["latent_tokens_per_step"]),
                            num_embodied=int(p["num_embodied_tokens"]))
        self._instruction: str | None = None
        self._ids: tuple[np.ndarray, np.ndarray] | None = None
        self.tokenize_count = 0

    def get(self, instruction: str) -> tuple[np.ndarray, np.ndarray]:
        """-> (input_ids (1, L) int64, attention_mask (1, L) int64)."""
        if instruction != self._instruction or self._ids is None:
            self._ids = self._encode(self._tokenizer, instruction, **self._kwargs)
            self._instruction = instruction
            self.tokenize_count += 1
        return self._ids


class ModelPolicy:
    """A model bundle + a backend behind `infer`. `last_timings_ms` holds the stage times of the last call."""

    def __init__(self, bundle: Bundle, backend: Backend, seed: int = 0, noise_scale: float = 1.0) -> None:
        if not 0.0 <= noise_scale <= 1.0:
            raise ValueError(f"noise_scale={noise_scale} must be in [0, 1]")
        self.bundle = bundle
        self.noise_scale = noise_scale  # start noise of the Euler steps; 0: deterministic chunks
        self.backend = backend
        self.manifest = bundle.manifest
        self.model_id = self.manifest.model_id
        self.prompts = PromptCache(bundle)
        self._rng = np.random.default_rng(seed)
        specs = {t.name: t for t in self.manifest.inputs}
        self._state_shape = specs["state"].shape if "state" in specs else None
        self._noise_shape = specs["noise"].shape
        self._sequence = 0
        self.last_timings_ms: dict[str, float] = {}

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """(1, horizon, action_dim): the shape of the `noise` argument of `infer` (seeded by the caller)."""
        return tuple(self._noise_shape)

    def make_inputs(self, observation: Observation, noise: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Observation -> the graph inputs (see module docstring)."""
        m = self.manifest
        missing = [c for c in m.cameras if c not in observation.images]
        if missing:
            raise ValueError(f"observation lacks camera(s) {missing}; bundle {m.model_id!r} needs {list(m.cameras)}")
        frames = [observation.images[c] for c in m.cameras]
        inputs = {}
        if self._device_resize(frames):  # the backend resizes on its device (same result to 1/255)
            inputs["frames"] = tuple(frames)  # V x (H_v, W_v, 3) uint8
        else:
            inputs["images"] = to_model_input(frames, m.image_size_px)  # (1, V, 3, S, S) float32
        if self._state_shape is not None:
            inputs["state"] = self._state(observation.state)
        if noise is None:
            noise = self._rng.standard_normal(self._noise_shape, dtype=np.float32) * np.float32(self.noise_scale)
        elif noise.shape != self._noise_shape:
            raise ValueError(f"noise shape {noise.shape} != bundle noise shape {self._noise_shape}")
        inputs["noise"] = np.ascontiguousarray(noise, dtype=np.float32)
        return inputs

    def _device_resize(self, frames: list[np.ndarray]) -> bool:
        """Whether the backend takes the raw frames: it says it resizes them and every side shrinks (enlarging
        stays on the host)."""
        if not getattr(self.backend, "resizes_frames", False):
            return False
        size = self.manifest.image_size_px
        return all(min(check_rgb(img).shape[:2]) >= size for img in frames)

    def _state(self, state: np.ndarray | None) -> np.ndarray:
        m = self.manifest
        if m.state_dim == 0:
            return np.zeros(self._state_shape, np.float32)  # graph ignores it
        if state is None:
            raise ValueError(f"robot state unknown; bundle {m.model_id!r} needs {m.state_dim} values "
                             f"{list(m.state_dim_names)}")
        state = np.asarray(state, dtype=np.float32).reshape(-1)
        if state.shape[0] != m.state_dim:
            raise ValueError(f"state has {state.shape[0]} values, bundle needs {m.state_dim} {list(m.state_dim_names)}")
        if not np.isfinite(state).all():
            raise ValueError(f"state contains NaN/Inf: {state.tolist()}")
        return state[None]

    def infer(self, observation: Observation, noise: np.ndarray | None = None) -> ActionChunk:
        t0 = time.perf_counter()
        inputs = self.make_inputs(observation, noise)
        t1 = time.perf_counter()
        inputs["input_ids"], inputs["attention_mask"] = self.prompts.get(observation.instruction)
        t2 = time.perf_counter()
        actions_norm, stage_ms = self.backend.run(inputs)  # (1, horizon, action_dim)
        t3 = time.perf_counter()
        actions_norm = np.asarray(actions_norm, dtype=np.float32)
        m = self.manifest
        if actions_norm.shape != (1, m.horizon, m.action_dim):
            raise RuntimeError(f"backend {self.backend.name} returned shape {actions_norm.shape}, expected "
                               f"(1, {m.horizon}, {m.action_dim})")
        bad = ~np.isfinite(actions_norm)
        if bad.any():
            raise NonFiniteActionError(f"backend {self.backend.name} returned {int(bad.sum())} NaN/Inf values of "
                                       f"{bad.size}; chunk dropped")
        actions = self.bundle.unnormalize(actions_norm[0])  # (horizon, action_dim) robot units
        stage_ms = dict(stage_ms)
        resize_ms = stage_ms.pop("resize_ms", 0.0)  # a backend that resizes on its device times it apart
        model_ms = (t3 - t2) * 1e3 - resize_ms
        self._sequence += 1
        chunk = ActionChunk(actions=actions, step_period_s=m.step_period_s, dim_names=m.action_dim_names,
                            action_space=m.action_space, stamp_s=observation.stamp_s, task_id=observation.task_id,
                            sequence=self._sequence, inference_ms=model_ms, model_id=m.model_id)
        t4 = time.perf_counter()
        self.last_timings_ms = {"preprocess_ms": (t1 - t0) * 1e3 + resize_ms, "tokenize_ms": (t2 - t1) * 1e3,
                                **stage_ms, "model_ms": model_ms, "postprocess_ms": (t4 - t3) * 1e3,
                                "total_ms": (t4 - t0) * 1e3}
        return chunk
