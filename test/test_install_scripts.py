"""The install scripts' disk guard: short of space, they stop before pip with the folder, the MB free and the
GB needed (a fresh CI machine once ran out of disk inside pip, which said only ENOSPC)."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _need(venv: Path, gb: int) -> subprocess.CompletedProcess:
    script = f'TAG=t; VENV="{venv}"; source scripts/install_common.sh; need_disk_gb {gb} && echo enough'
    return subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30)


def test_disk_guard_passes_with_room_and_names_the_numbers_without(tmp_path):
    ok = _need(tmp_path / ".venv", 0)
    assert ok.returncode == 0 and "enough" in ok.stdout
    short = _need(tmp_path / ".venv", 10 ** 6)  # a million GB: no disk has that
    assert short.returncode == 1 and "enough" not in short.stdout
    assert f"{tmp_path} has " in short.stderr and "MB free" in short.stderr and "about 1000000 GB" in short.stderr


def test_lerobot_install_refuses_a_python_other_than_3_12_before_creating_anything(tmp_path):
    """lerobot 0.6 needs Python 3.12: a wrong $PYTHON is named in one line and no venv is left behind."""
    import sys

    venv = tmp_path / ".venv-lerobot"
    proc = subprocess.run(["bash", "scripts/install_lerobot.sh"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "LEROBOT_VENV": str(venv), "PYTHON": sys.executable})
    assert proc.returncode == 1 and not venv.exists()
    assert f"PYTHON={sys.executable} is not Python 3.12 (Python {sys.version.split()[0]})" in proc.stderr
