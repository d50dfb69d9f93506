"""benchmarks/gpu_paper_fast.py runs its variants on the CPU (tiny preset: the dry run of the GPU session) and
gpu_fast_table.py writes its table into a document between the markers."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_fast_variants_dry_run_and_table(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'training'}"}
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_paper_fast.py"), "--device", "cpu", "--preset",
                    "tiny", "--iterations", "2", "--warmup", "0", "--only", "base,all", "--out", str(tmp_path)],
                   check=True, env=env, timeout=600, capture_output=True)
    result = json.loads((tmp_path / "fast_tiny.json").read_text())
    rows = {r["variant"]: r for r in result["rows"]}
    assert set(rows) == {"base", "all"} and all("error" not in r for r in rows.values())
    assert rows["base"]["max_abs_error"] == 0.0 and rows["all"]["max_abs_error"] > 0  # fp8 is approximate
    assert rows["all"]["cosine"] >= 0.999
    assert rows["all"]["fp8_layers"] > 0 and rows["all"]["task_prefix_ms"] > 0
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- gpu-fast-table:start -->\nold\n<!-- gpu-fast-table:end -->\nend\n")
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_fast_table.py"), "--write", str(doc),
                    str(tmp_path / "fast_tiny.json")], check=True, timeout=60)
    text = doc.read_text()
    assert "old" not in text and "| all |" in text and text.startswith("intro") and text.endswith("end\n")
