#!/usr/bin/env bash
# The LeRobot venv (.venv-lerobot), separate from the stack's .venv: lerobot 0.6.x needs Python >= 3.12 and its own
# torch (< 2.12), while .venv is Python 3.11 with the project's pins. It holds lerobot[dataset,training] pinned
# through requirements/lerobot.txt (the versions verified together) and nothing of this project: the tests write an
# export with the project's .venv and hand the folder to lerobot's own programs here.
# torch: PyPI serves torch for Python 3.12 on x86_64 only as the CUDA build (several GB with its nvidia-* wheels);
# it runs on the CPU all the same. docs/lerobot.md has the measured size and time.
# Python 3.12: $PYTHON if set, else python3.12 on PATH, else the newest 3.12 that pyenv has.
# Idempotent: a stamp file records the inputs' fingerprint; a complete venv is left alone (about 1 s).
# Usage: bash scripts/install_lerobot.sh        (LEROBOT_VENV=... to put it elsewhere, FORCE=1 to redo the steps)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LEROBOT_VENV:-$ROOT/.venv-lerobot}"
STAMP="$VENV/.stamps/lerobot"
cd "$ROOT"
TAG=install-lerobot
source scripts/install_common.sh

LEROBOT="lerobot[dataset,training]==0.6.1"
PINS=requirements/lerobot.txt
fp="$( (echo "$LEROBOT"; cat "$0" "$PINS" scripts/install_common.sh) | sha256sum | cut -d' ' -f1)"

is_312() { "$1" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; }

find_python312() {
  if [ -n "${PYTHON:-}" ]; then
    is_312 "$PYTHON" || fail "PYTHON=$PYTHON is not Python 3.12 ($("$PYTHON" --version 2>&1))"
    echo "$PYTHON"; return
  fi
  if command -v python3.12 >/dev/null && is_312 python3.12; then echo python3.12; return; fi
  if command -v pyenv >/dev/null; then
    local v
    for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -t. -k3 -n -r); do
      if is_312 "$(pyenv root)/versions/$v/bin/python3.12"; then echo "$(pyenv root)/versions/$v/bin/python3.12"; return; fi
    done
  fi
  fail "no Python 3.12 found (lerobot 0.6 needs it): set PYTHON=/path/to/python3.12, or install it ('pyenv install 3.12' or 'apt-get install python3.12 python3.12-venv')"
}

check() {  # lerobot imports, its programs are there, torch runs a CPU op
  "$VENV/bin/python" - <<'PY'
import importlib.metadata as md, torch
assert md.version("lerobot") == "0.6.1", md.version("lerobot")
from lerobot.datasets.lerobot_dataset import LeRobotDataset  # noqa: F401
from lerobot.policies.act.modeling_act import ACTPolicy  # noqa: F401
import av  # noqa: F401
assert float(torch.ones(2).sum()) == 2.0
PY
  [ -x "$VENV/bin/lerobot-train" ] && [ -x "$VENV/bin/lerobot-edit-dataset" ]
}

if [ -z "${FORCE:-}" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$fp" ] && check >/dev/null 2>&1; then
  step "$VENV up to date"
  exit 0
fi

PYTHON="$(find_python312)"
need_disk_gb 8
ensure_venv
step "installing $LEROBOT with the pinned versions of $PINS (torch for Python 3.12 is the CUDA build: about 3 GB of wheels, a 5.5 GB venv, several minutes)"
pip_install --quiet -c "$PINS" "$LEROBOT" || fail "pip could not install $LEROBOT (constraints $PINS)"
check || fail "$VENV is incomplete (see the import error above)"
mkdir -p "$(dirname "$STAMP")"
echo "$fp" > "$STAMP"
step "done: $("$VENV/bin/python" -c 'import sys, torch, lerobot, av; print(f"Python {sys.version.split()[0]}, lerobot {lerobot.__version__}, torch {torch.__version__}, av {av.__version__}")')"
