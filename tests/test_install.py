"""vlx as users install it: a wheel (`pip wheel .`), not an editable checkout, run from a folder that is not the
repository. Its configs must come from inside the installed package. (The demo runs from it too: test_demo.)"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import HANG_GUARD_S, cli_env, lines, shipped_configs


def test_the_wheel_holds_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"vlx/conf/{p}" for p in shipped_configs()}
    assert configs <= names
    # the review page's own files: it loads nothing from the internet
    assert {f"vlx/review/static/{name}" for name in ("index.html", "app.js", "style.css")} <= names
    assert not any(name.startswith(("tests/", "scripts/", "conf/")) for name in names)


def test_building_the_wheel_prints_no_setuptools_warning(tmp_path):
    """`pip wheel .` with the environment's setuptools: a folder setuptools sees as a package but pyproject leaves
    out (vlx/review/static was one) costs the user a 40-line warning at every install."""
    from helpers import REPO

    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", str(REPO), "-w", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    output = res.stdout + res.stderr
    assert "Warning" not in output and "!!" not in output, output[-3000:]
    assert list(tmp_path.glob("vlx-*.whl"))


@pytest.mark.slow
def test_an_installed_wheel_runs_from_any_folder(installed_vlx, tmp_path):
    python = installed_vlx.parent / "python"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import vlx.__main__ as m; print(m.__file__); print(m.CONFIG_DIR)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    )
    module, configs = map(Path, where.stdout.split())
    site = module.parent.parent
    assert site.is_relative_to(installed_vlx.parent.parent) and configs == site / "vlx" / "conf"
    res = subprocess.run(
        [str(installed_vlx), "model=tiny_llava", "--cfg", "job"],
        cwd=elsewhere,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "tiny: llava_next" in res.stdout
    out = tmp_path / "run"
    res = subprocess.run(
        [
            str(installed_vlx),
            "model=tiny_llava",
            "task=shapes",
            "task.limit=3",
            "generation.max_new_tokens=4",
            "eval.resamples=0",
            f"hydra.run.dir={out}",
        ],
        cwd=elsewhere,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(lines(out / "predictions.jsonl")) == 3 and (out / "metrics.json").is_file()
