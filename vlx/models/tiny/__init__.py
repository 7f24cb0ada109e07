"""Tiny random-weight checkpoints of the real VLM architectures, built locally.

Tests and smoke runs need models that load through the exact same code path as the real hub checkpoints, i.e.
``AutoProcessor.from_pretrained`` plus ``AutoModelForImageTextToText.from_pretrained``, without network access and in
well under a second of CPU time per forward pass. This package builds such checkpoints: the real model, config and
processor classes, the real special-token conventions and chat template of each family, but a byte-level BPE
tokenizer trained on a small in-package corpus (`_text`) and a few hundred thousand random float32 parameters
(under 2.1 MB of weights).

One module per architecture, each with `build(out_dir)`; adding one is a module and a line in `ARCHITECTURES`.
`load_tiny_adapter` (`loading`) builds one on first use and loads it as any checkpoint; nothing of the tiny models
reaches the production adapter.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

try:  # POSIX only; without it concurrent builders still never see a half-written model, they just both build.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

from vlx.models.tiny.loading import load_tiny_adapter, tiny_checkpoint

__all__ = [
    "ARCHITECTURES",
    "TINY_ARCHITECTURES",
    "build_tiny_model",
    "ensure_tiny_model",
    "load_tiny_adapter",
    "missing_requirements",
    "tiny_checkpoint",
]

logger = logging.getLogger(__name__)

# architecture -> (its module in this package, what its processor needs beyond vlx's dependencies)
ARCHITECTURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "llava_next": ("llava_next", ()),
    "paligemma": ("paligemma", ()),
    "paligemma2": ("paligemma2", ()),
    "gemma3": ("gemma3", ()),
    "idefics3": ("idefics3", ()),
    # their processors hold a video processor, written as settings and left out where torchvision does not import
    # (vlx.models.processors): they build and load without it
    "llava_onevision": ("llava_onevision", ()),
    "internvl": ("internvl", ()),
    "qwen2_5_vl": ("qwen2_5_vl", ()),
    "qwen3_vl": ("qwen3_vl", ()),
}
TINY_ARCHITECTURES = tuple(ARCHITECTURES)

# Written last by a build; its presence (with matching arch/seed) marks a directory as a complete tiny model.
MARKER_FILE = "tiny_model.json"
# Bump when the recipe changes so that cached tiny models get rebuilt by `ensure_tiny_model`.
_RECIPE_VERSION = 5  # 5: video processors written as settings
_REQUIRED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "processor_config.json",
    MARKER_FILE,
)


def _builder(arch: str) -> Callable[[Path], None]:
    def build(out_dir: Path) -> None:
        importlib.import_module(f"{__name__}.{ARCHITECTURES[arch][0]}").build(out_dir)

    return build


_BUILDERS = {arch: _builder(arch) for arch in ARCHITECTURES}


def missing_requirements(arch: str) -> str | None:
    """Why a tiny model of `arch` cannot be built or used here (a package its processor needs), or None.

    None for every architecture today: the processors of Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision and InternVL hold a
    video processor, which transformers makes with torchvision, but vlx builds and loads them without it where
    torchvision does not import (`vlx.models.processors`)."""
    _check_arch(arch)
    missing = [name for name in ARCHITECTURES[arch][1] if not _imports(name)]
    return f"its processor needs {', '.join(missing)}, which does not import here" if missing else None


def _imports(package: str) -> bool:
    try:
        importlib.import_module(package)
    except Exception:  # noqa: BLE001 - a package that is missing or broken (a CUDA torchvision beside a CPU torch)
        return False
    return True


def _check_arch(arch: str) -> None:
    if arch not in TINY_ARCHITECTURES:
        raise ValueError(f"Unknown tiny architecture {arch!r}; allowed: {', '.join(TINY_ARCHITECTURES)}")


def build_tiny_model(arch: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Builds a tiny random-weight model with tokenizer and processor and saves it to `out_dir`.

    The result loads with ``AutoProcessor.from_pretrained(out_dir)`` and
    ``AutoModelForImageTextToText.from_pretrained(out_dir)``. Same `arch` and `seed` give byte-identical
    weights. Existing files in `out_dir` are overwritten; use `ensure_tiny_model` for an atomic, cached build.

    Args:
        arch: One of `TINY_ARCHITECTURES`.
        out_dir: Directory to write (created if missing).
        seed: Seed for the random weights.

    Returns:
        `out_dir` as a `Path`.

    Raises:
        ValueError: If `arch` is unknown.
        ConfigError: its processor needs a package that does not import here (`missing_requirements`).
    """
    _check_arch(arch)
    if (missing := missing_requirements(arch)) is not None:
        from vlx.errors import ConfigError

        raise ConfigError(f"a tiny {arch} model cannot be built: {missing}")
    out_dir = Path(out_dir)
    logger.info("building tiny %s model (seed %d) into %s", arch, seed, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A fork keeps the caller's global RNG state untouched; seeding it makes the init reproducible.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _BUILDERS[arch](out_dir)
    # Last, so that an interrupted build is never mistaken for a complete one.
    marker = {"arch": arch, "seed": seed, "recipe_version": _RECIPE_VERSION}
    (out_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
    return out_dir


def _is_complete(out_dir: Path, arch: str, seed: int) -> bool:
    """Tells whether `out_dir` holds a finished tiny model of this arch, seed and recipe."""
    if not all((out_dir / name).is_file() for name in _REQUIRED_FILES):
        return False
    try:
        marker = json.loads((out_dir / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    return marker == {"arch": arch, "seed": seed, "recipe_version": _RECIPE_VERSION}


def _check_is_ours(out_dir: Path) -> None:
    """Refuses to replace a folder that holds files and no marker: it is not a tiny model this factory made (nor a
    build of it cut short, which has the marker's folder name only as a temporary sibling)."""
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER_FILE).is_file():
        from vlx.errors import ConfigError

        raise ConfigError(
            f"{out_dir} holds files that vlx's tiny-model factory did not make, so it will not build a tiny model "
            f"there; move them away, or set paths.cache_dir to another folder"
        )


@contextlib.contextmanager
def _build_lock(out_dir: Path) -> Iterator[None]:
    """Holds an exclusive lock on a sibling lock file, so only one process builds or replaces `out_dir`."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    lock_path = out_dir.parent / f".{out_dir.name}.lock"
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released by the OS too if this process is killed
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_tiny_model(arch: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Returns `out_dir` holding a complete tiny model, building it only if it is missing or incomplete.

    The model is built in a temporary sibling directory and renamed into place, so a killed build never leaves a
    half-written model at `out_dir`. Concurrent callers serialise on a lock file: the second one finds the first
    one's finished model and returns it without building.

    Args:
        arch: One of `TINY_ARCHITECTURES`.
        out_dir: Cache directory of the model.
        seed: Seed for the random weights; a cached model built with another seed is rebuilt.

    Returns:
        `out_dir` as a `Path`.

    Raises:
        ValueError: If `arch` is unknown.
        ConfigError: its processor needs a package that does not import here (`missing_requirements`).
    """
    _check_arch(arch)
    out_dir = Path(out_dir)
    if _is_complete(out_dir, arch, seed):  # fast path, no lock needed: complete dirs only ever appear by rename
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(out_dir):
        if _is_complete(out_dir, arch, seed):  # another process finished it while we waited for the lock
            return out_dir
        # Under the lock nobody else is building, so temp dirs of killed builds can go.
        for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        _check_is_ours(out_dir)
        tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        tmp_dir.chmod(0o755)  # mkdtemp makes it private; the renamed cache dir should be readable like any other
        try:
            build_tiny_model(arch, tmp_dir, seed)
            if out_dir.exists():  # incomplete, or another arch/seed: move aside first, rename needs an empty target
                trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
                os.replace(out_dir, trash / "old")
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp_dir, out_dir)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return out_dir
