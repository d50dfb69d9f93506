"""The repository is a product: small files, no paths of the machine it was written on, bundles without
experiment records, and a history that does not grow by a model's weight with every training round."""
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_FILE_MB = 16.0  # one tracked file
MAX_HISTORY_ONNX_MB = 64.0  # every ONNX graph ever committed, all versions together
BUNDLE_FILES = re.compile(r"(manifest\.yaml|README\.md|tokenizer\.json|dataset_statistics\.json|[\w.-]+\.onnx)$")
MACHINE_PATH = re.compile(r"""(^|[\s"'=:(])/(home|root|work|tmp|Users|mnt)/[\w.-]+/""")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def tracked() -> list[Path]:
    try:
        return [ROOT / p for p in git("ls-files").splitlines()]
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout ({exc})")


def test_no_tracked_file_is_larger_than_the_limit(tracked):
    big = [(p.relative_to(ROOT), p.stat().st_size / 1e6) for p in tracked if p.is_file()
           and p.stat().st_size > MAX_FILE_MB * 1e6]
    assert not big, f"tracked files over {MAX_FILE_MB} MB: {big}"


def test_no_committed_file_names_a_path_of_the_machine_it_was_made_on(tracked):
    found = []
    for p in tracked:
        if p.suffix in {".onnx", ".npz", ".png", ".mcap"} or p.parent.name == "data" or not p.is_file():
            continue
        try:
            text = p.read_text()
        except UnicodeDecodeError:
            continue
        found += [f"{p.relative_to(ROOT)}:{i}" for i, line in enumerate(text.splitlines(), 1)
                  if MACHINE_PATH.search(line) and p != Path(__file__).resolve()]
    assert not found, f"absolute paths of a machine in committed files: {found[:10]}"


def test_model_bundles_hold_only_what_the_policy_loads_and_a_model_card(tracked):
    extra = [str(p.relative_to(ROOT)) for p in tracked
             if p.relative_to(ROOT).parts[0] == "models" and not BUNDLE_FILES.search(p.name)]
    assert not extra, f"files in model bundles that are neither bundle files nor the model card: {extra} " \
                      "(experiment records go to docs/experiments/)"


def test_history_of_onnx_graphs_stays_within_its_budget(tracked):
    if git("rev-parse", "--is-shallow-repository").strip() == "true":
        pytest.skip("shallow clone: the history is not here to measure")
    total = 0
    objects = git("rev-list", "--objects", "--all")
    names = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in objects.splitlines() if " " in line}
    onnx = [sha for sha, name in names.items() if name.endswith(".onnx")]
    sizes = subprocess.run(["git", "cat-file", "--batch-check=%(objectsize)"], cwd=ROOT, input="\n".join(onnx),
                           capture_output=True, text=True, check=True).stdout.split()
    total = sum(int(s) for s in sizes) / 1e6
    assert total <= MAX_HISTORY_ONNX_MB, (
        f"ONNX graphs in the git history take {total:.1f} MB > {MAX_HISTORY_ONNX_MB} MB: publish new bundle "
        "weights outside git (a release asset) instead of committing each training round")
