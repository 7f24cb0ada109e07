"""The identity of the weights a run loaded, for its manifest (`vlx.run.manifest`):

- a hub id: the commit it resolved to, read from the Hugging Face cache (`commit:<sha>`, the cache's snapshot folder
  name), where the cache knows it;
- a local model folder: a sampled fingerprint, `sampled-sha256:<hex>`, over each `*.safetensors` file's name, size
  and JSON header (every tensor's name, dtype, shape and offsets) and the first 1 KiB of every tensor's data. It
  reads about 1 KiB per tensor and tells apart any two models of which a tensor changed as a whole (a fine-tune, a
  merge of another adapter, another dtype or shape). A full-content hash would read the whole model (15 GB for 7B)
  once more on every run and resume (the two timed: docs/PERFORMANCE.md, "The manifest's weight fingerprint"); a
  change to a tensor's tail alone is not one a run makes. Folders of pickled `*.bin` weights have no header: their
  names, sizes and first 1 MiB are hashed (`sampled-bin-sha256:`);
- an adapter folder (`model.adapter`): a full sha256 of `adapter_model.safetensors` (or `.bin`) and
  `adapter_config.json` (`sha256:<hex>`). Adapters are small (tens to hundreds of MB) and are the weights most often
  retrained in place, where a change may leave every tensor's first values alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from vlx.errors import ConfigError

SAMPLE_BYTES = 1024  # of every tensor's data, in the sampled fingerprint of a model folder
BIN_SAMPLE_BYTES = 2**20  # of every pickled weight file
HEX = 24  # hex digits kept of a fingerprint: 96 bits tell any two models apart


def weights_identity(checkpoint: str) -> str | None:
    """`commit:<sha>` for a hub id the Hugging Face cache holds, a `fingerprint` for a local folder, else None."""
    folder = Path(checkpoint).expanduser()
    if folder.is_dir():
        return fingerprint(folder)
    return hub_commit(checkpoint)


def hub_commit(repo_id: str) -> str | None:
    """The commit a hub id's `main` resolves to in the local Hugging Face cache (the folder its files were loaded
    from), or None where the cache does not hold it."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id
        return None
    if not isinstance(found, str):
        return None
    return f"commit:{Path(found).parent.name}"  # .../models--org--name/snapshots/<commit>/config.json


def fingerprint(folder: Path) -> str | None:
    """The sampled fingerprint of a model folder's weights (see the module's docstring), or None without weights.

    Raises:
        ConfigError: a weights file cannot be read, or is not a safetensors file.
    """
    digest = hashlib.sha256()
    files = sorted(folder.glob("*.safetensors"))
    if files:
        for path in files:
            _sample_safetensors(path, digest)
        return f"sampled-sha256:{digest.hexdigest()[:HEX]}"
    files = sorted(folder.glob("*.bin"))
    if not files:
        return None
    for path in files:
        with _reading(path), path.open("rb") as f:
            digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
            digest.update(f.read(BIN_SAMPLE_BYTES))
    return f"sampled-bin-sha256:{digest.hexdigest()[:HEX]}"


def _sample_safetensors(path: Path, digest: Any) -> None:
    """Feeds `digest` a safetensors file's name, size, header and the first SAMPLE_BYTES of each tensor."""
    with _reading(path), path.open("rb") as f:
        size = path.stat().st_size
        head = f.read(8)
        if len(head) < 8 or (length := struct.unpack("<Q", head)[0]) > size - 8:
            raise ConfigError(f"{path}: not a safetensors file (its header is cut short); save the model again")
        header = f.read(length)
        digest.update(f"{path.name}\0{size}\0".encode() + header)
        try:
            tensors = json.loads(header)
        except ValueError as err:
            raise ConfigError(f"{path}: not a safetensors file ({err}); save the model again") from err
        spans = sorted(v["data_offsets"] for k, v in tensors.items() if k != "__metadata__")
        for begin, end in spans:  # in file order: one forward pass over the file
            f.seek(8 + length + begin)
            digest.update(f.read(min(SAMPLE_BYTES, end - begin)))


def adapter_fingerprint(folder: Path) -> str | None:
    """A full sha256 of an adapter folder's weights and adapter_config.json (`sha256:<hex>`), or None without them."""
    files = [
        folder / "adapter_config.json",
        *sorted(folder.glob("adapter_model*.safetensors")),
        *sorted(folder.glob("adapter_model*.bin")),
    ]
    files = [p for p in files if p.is_file()]
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        with _reading(path), path.open("rb") as f:
            digest.update(f"{path.name}\0".encode())
            digest.update(_file_sha256(f))
    return f"sha256:{digest.hexdigest()[:HEX]}"


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """An OSError on reading `path` as a ConfigError naming it."""
    try:
        yield
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read for the run's manifest ({err.strerror or err})") from err


def _file_sha256(f: BinaryIO) -> bytes:
    """The SHA-256 of an open file, read in 1 MiB chunks (hashlib.file_digest is Python 3.11+; vlx runs on 3.10)."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
    return digest.digest()
