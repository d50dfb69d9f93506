# Helpers shared by install.sh and install_libero.sh. Source it after setting TAG (the log prefix), VENV and PYTHON.

step() { printf '\033[1m[%s]\033[0m %s\n' "$TAG" "$*"; }
fail() { printf '\033[31m[%s] FAILED:\033[0m %s\n' "$TAG" "$*" >&2; exit 1; }

# create $VENV with $PYTHON (>= 3.10) unless it exists
ensure_venv() {
  [ -x "$VENV/bin/python" ] && return 0
  step "creating $VENV with $($PYTHON --version 2>&1)"
  "$PYTHON" -c 'import sys; assert sys.version_info[:2] >= (3, 10), sys.version' \
    || fail "Python >= 3.10 is required (found $($PYTHON --version 2>&1)); set PYTHON=python3.11"
  "$PYTHON" -m venv "$VENV" || fail "could not create $VENV (install python3-venv)"
}

# fail early, with numbers, when the venv's disk has less than $1 GB free (pip would die mid-install with ENOSPC)
need_disk_gb() {
  local dir free_kb
  dir="$(dirname "$VENV")"
  free_kb="$(df -Pk "$dir" | awk 'NR == 2 {print $4}')"
  [ -n "$free_kb" ] || return 0
  [ "$free_kb" -ge $(( $1 * 1024 * 1024 )) ] \
    || fail "$dir has $(( free_kb / 1024 )) MB free; installing $VENV needs about $1 GB (free some space, or set the venv path)"
}

# pip install into $VENV (no wheel cache: it would double the disk a fresh install takes), minus the machine-specific "Location ... is ignored" index warnings; keeps pip's status
pip_install() {
  set +o pipefail
  "$VENV/bin/python" -m pip --disable-pip-version-check install --no-cache-dir "$@" 2>&1 \
    | grep -v "^WARNING: Location '.*' is ignored"
  local rc=${PIPESTATUS[0]}
  set -o pipefail
  return "$rc"
}
