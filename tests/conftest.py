"""Test setup: one torch thread, every cache in a temp folder, W&B offline, and a fixture composing the real conf/."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Set before torch/transformers/datasets/wandb are imported: several read these only at import time.
_CACHE = Path(os.environ.get("VLX_TEST_CACHE") or tempfile.mkdtemp(prefix="vlx-tests-"))
os.environ["OMP_NUM_THREADS"] = "1"  # two threads made the tiny-model suite 4x slower on 2-core machines
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["VLX_CACHE_DIR"] = str(_CACHE / "vlx")  # tiny models and the shapes data, built once per session
os.environ["HF_HOME"] = str(_CACHE / "hf")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_CACHE"] = str(_CACHE / "hf" / "datasets")
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_DIR"] = str(_CACHE / "wandb")
os.environ["WANDB_CACHE_DIR"] = str(_CACHE / "wandb-cache")
os.environ["WANDB_CONFIG_DIR"] = str(_CACHE / "wandb-config")
os.environ["WANDB_SILENT"] = "true"
os.environ["MPLCONFIGDIR"] = str(_CACHE / "mpl")
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

from vlx.__main__ import CONFIG_DIR  # noqa: E402
from vlx.metrics import meteor  # noqa: E402

torch.set_num_threads(1)
# one METEOR JVM per test process instead of one per scoring (each start costs 6-20 s, the most of a small eval)
meteor.keep_alive()

REPO = Path(__file__).resolve().parent.parent
# the official e-SNLI-VE CSVs (no images); VLX_ESNLIVE_DIR points elsewhere, e.g. on a machine without shared/
SHARED_ESNLI = Path(os.environ.get("VLX_ESNLIVE_DIR") or REPO.parent / "shared" / "data" / "esnlive")


def compose_config(*overrides: str, run_dir: Path) -> DictConfig:
    """conf/ composed with overrides (as a command line gives them), the run directory `run_dir`; HydraConfig set."""
    if not any(o.startswith("eval_after_infer=") for o in overrides):
        overrides = (*overrides, "eval_after_infer=false")  # scoring has tests of its own; keep the rest fast
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                *overrides,
                f"hydra.run.dir={run_dir}",
                f"hydra.runtime.output_dir={run_dir}",
            ],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    return cfg


@pytest.fixture
def make_cfg(tmp_path: Path):
    """Composes conf/ with overrides, the run directory in tmp_path; returns the config (HydraConfig set)."""

    def _make(*overrides: str, run_dir: Path | None = None) -> DictConfig:
        return compose_config(*overrides, run_dir=run_dir or tmp_path / "run")

    yield _make
    GlobalHydra.instance().clear()


from helpers import cli_env  # noqa: E402,F401 - the tests import it from here too


@pytest.fixture
def no_model_loads(monkeypatch):
    """Fails the test if anything loads a model or processor: for checks that must come before any weights load
    (reading the checkpoint's config.json, which names its family, is no load)."""
    import vlx.models.hf as base

    def refuse(*args, **kwargs):
        raise AssertionError("a model or processor was loaded before the check")

    monkeypatch.setattr(base, "load_model", refuse)
    monkeypatch.setattr(base, "load_processor", refuse)


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """A wheel of this checkout (`pip wheel .`)."""
    from helpers import build_wheel

    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def installed_vlx(wheel, tmp_path_factory) -> Path:
    """The `vlx` command of that wheel installed into a fresh venv (not editable; helpers.install_wheel)."""
    from helpers import install_wheel

    venv = tmp_path_factory.mktemp("installed") / "venv"
    install_wheel(wheel, venv)
    return venv / "bin" / "vlx"
