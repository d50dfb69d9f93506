#!/usr/bin/env bash
# One-command setup from nothing: .venv with pinned dependencies (CPU torch, ROS 2 Kilted wheels, franky,
# franky-sim, MuJoCo, onnxruntime ...), the custom interfaces built with CMake into the venv, and both Python
# packages (vla_jepa_ros, training/ = vla_jepa) installed editable.
# Re-running is fast: each step is skipped when its inputs have not changed (stamps in .venv/.stamps).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
STAMPS="$VENV/.stamps"
cd "$ROOT"
TAG=install
source scripts/install_common.sh

# fingerprint FILES... -> sha256 of their contents (stable input fingerprint for a step)
fingerprint() { cat "$@" | sha256sum | cut -d' ' -f1; }
up_to_date() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
mark_done() { mkdir -p "$STAMPS"; echo "$2" > "$STAMPS/$1"; }

# 1. venv
ensure_venv

# 2. pinned dependencies (constraints.txt pins every transitive version; torch is the CPU build)
deps_fp="$(fingerprint requirements/main.txt requirements/constraints.txt)"
if ! up_to_date deps "$deps_fp"; then
  step "installing pinned dependencies (about 1-2 minutes on a fresh machine)"
  need_disk_gb 3
  pip_install --quiet -r requirements/main.txt -c requirements/constraints.txt \
    || fail "pip could not install requirements/main.txt (see the pip output above)"
  "$VENV/bin/python" - <<'PY' || fail "torch is not the pinned CPU build"
import torch
assert torch.__version__.startswith("2.13.0"), torch.__version__
assert torch.version.cuda is None, f"a CUDA build of torch was installed ({torch.version.cuda}); expected CPU"
PY
  mark_done deps "$deps_fp"
else
  step "dependencies up to date"
fi

# 3. custom interfaces, built with plain CMake against the ros-* wheels and installed into the venv prefix
ifc_dir=interfaces/vla_jepa_interfaces
ifc_fp="$(fingerprint $(find "$ifc_dir" -type f | sort) requirements/constraints.txt)"
if ! up_to_date interfaces "$ifc_fp" || ! "$VENV/bin/python" -c 'import vla_jepa_interfaces.msg' 2>/dev/null; then
  step "building $ifc_dir with CMake (about 30 s)"
  rm -rf build/interfaces
  log="$ROOT/build/interfaces.log"; mkdir -p build
  if ! (AMENT_PREFIX_PATH="$VENV" cmake -S "$ifc_dir" -B build/interfaces \
          -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
          -DPython3_EXECUTABLE="$VENV/bin/python3" -DBUILD_TESTING=OFF \
        && cmake --build build/interfaces -j"$(nproc)" --target install) > "$log" 2>&1; then
    tail -30 "$log" >&2
    fail "building the interfaces failed; full log: $log"
  fi
  "$VENV/bin/python" -c 'from vla_jepa_interfaces.msg import ActionChunk, TaskStatus' \
    || fail "interfaces built but do not import"
  mark_done interfaces "$ifc_fp"
else
  step "interfaces up to date"
fi

# 4. the two Python packages, editable (no build isolation: everything they need is already pinned above)
pkg_fp="$(fingerprint setup.py setup.cfg training/pyproject.toml)"
if ! up_to_date packages "$pkg_fp"; then
  step "installing vla_jepa_ros and training/ (vla_jepa) editable"
  PYTHONWARNINGS=ignore pip_install --quiet --no-deps --no-build-isolation -e . -e training \
    || fail "editable install of the project packages failed"
  mark_done packages "$pkg_fp"
else
  step "packages up to date"
fi

# 5. Foxglove's TypeScript MCAP reader for the independent bag check (test/test_bag_validation.py), pinned by
#    tools/mcap_check/package-lock.json and installed from the npm registry into tools/mcap_check/node_modules
mcap_check=tools/mcap_check
if command -v node >/dev/null && command -v npm >/dev/null \
   && node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  npm_fp="$(fingerprint "$mcap_check/package.json" "$mcap_check/package-lock.json")"
  if ! up_to_date npm_mcap_check "$npm_fp" || [ ! -d "$mcap_check/node_modules/@mcap/core" ]; then
    step "installing $mcap_check (npm ci: @mcap/core, @foxglove/rosmsg2-serialization, pinned)"
    npm ci --prefix "$mcap_check" --no-audit --no-fund --loglevel=error \
      || fail "npm ci in $mcap_check failed (see the npm output above)"
    mark_done npm_mcap_check "$npm_fp"
  else
    step "$mcap_check up to date"
  fi
else
  step "node >= 20 with npm not found: skipping $mcap_check (the independent MCAP check will be skipped)"
fi

# 6. a GL context for MuJoCo offscreen rendering (EGL from Mesa, or OSMesa as a fallback)
if ! MUJOCO_GL=egl "$VENV/bin/python" -c 'import mujoco; mujoco.GLContext(8, 8).make_current()' 2>/dev/null \
   && ! MUJOCO_GL=osmesa "$VENV/bin/python" -c 'import mujoco; mujoco.GLContext(8, 8).make_current()' 2>/dev/null; then
  step "no offscreen GL found: installing Mesa (EGL + OSMesa) with apt"
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libgl1 libosmesa6 >/dev/null) \
      || fail "apt-get could not install libegl1 libgl1 libosmesa6"
  else
    fail "MuJoCo needs an offscreen GL: run 'sudo apt-get install libegl1 libgl1 libosmesa6'"
  fi
fi

step "done: $("$VENV/bin/python" -c 'import torch, rclpy, franky, mujoco, onnxruntime; print(f"torch {torch.__version__}, mujoco {mujoco.__version__}, onnxruntime {onnxruntime.__version__}")')"
