"""A run's manifest: everything that changes its outputs, recorded once per run in `<run dir>/manifest.json`.

Two runs' manifests are diffed key by key (`differences`): a resumed run is refused when its manifest differs from
the one its predictions were made with, and `stage=compare` and `stage=report` list what differs between the runs
they set side by side. The manifest holds what the config alone cannot show, as the loaded model has it: the
weights' identity, the dtype `auto` resolved to, the prompt as rendered for the split's first item (chat template,
prompt template, demonstrations), the image processor's settings and the tokenizer's padding side; and, beside them,
the decoding, seed and library versions.

Weight identity (`weights`, `adapter_weights`) is `vlx.run.weights`'s: a hub commit, or a fingerprint.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlx.errors import ConfigError
from vlx.run.directory import RunDir
from vlx.run.store import write_json
from vlx.run.weights import adapter_fingerprint, weights_identity

log = logging.getLogger(__name__)

MANIFEST = RunDir.MANIFEST
FORMAT = 1  # manifest.json's layout; raised when a key changes meaning

LIBRARIES = ("torch", "transformers", "peft", "vlx")


@dataclass(frozen=True)
class Manifest:
    """What a run's outputs depend on (see the module's docstring); a JSON object in `manifest.json`.

    Attributes:
        stage: the stage that made the run (infer, finetune).
        model: the checkpoint loaded (hub id or folder).
        weights: its identity: `commit:<sha>` or a fingerprint (`fingerprint`); None where unknown.
        adapter: the LoRA adapter folder loaded on top (model.adapter), or None.
        adapter_weights: its sha256 (`adapter_fingerprint`), or None.
        dtype: the dtype the weights were loaded in (what `auto` resolved to).
        quantization: the model's quantization config (bitsandbytes' settings), or None.
        task: the task's name and split.
        shots: the few-shot settings (k, strategy, seed, ...), or None.
        prompt: the prompt as rendered for the split's first item, demonstrations included (None: finetune).
        image_processor: the processor's image settings (sizes, tiles, mean and std, resampling, ...).
        padding_side: the tokenizer's padding side.
        decode: generate, score or score_then_explain (None: finetune).
        generation: generate()'s settings (None: finetune).
        seed: the run's seed.
        batches: batch settings that change answers: the batch size and order when decoding samples (each batch's
            sampling seed comes from its first item), else None (greedy outputs do not depend on batching).
        training: finetune's LoRA and training settings, or None.
        versions: python, torch, transformers, peft and vlx.
        format: manifest.json's layout version.
    """

    stage: str
    model: str
    weights: str | None
    adapter: str | None = None
    adapter_weights: str | None = None
    dtype: str | None = None
    quantization: dict[str, Any] | None = None
    task: dict[str, Any] = field(default_factory=dict)
    shots: dict[str, Any] | None = None
    prompt: str | None = None
    image_processor: dict[str, Any] = field(default_factory=dict)
    padding_side: str | None = None
    decode: str | None = None
    generation: dict[str, Any] | None = None
    seed: int | None = None
    batches: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    versions: dict[str, str | None] = field(default_factory=dict)
    format: int = FORMAT

    def to_dict(self) -> dict[str, Any]:
        """The manifest as plain JSON data (tuples become lists, as they read back from the file)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """A manifest from its JSON data; keys of a newer layout are dropped, missing ones take their defaults.

        Raises:
            ConfigError: the data lacks `stage`, `model` or `weights`.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [k for k in ("stage", "model", "weights") if k not in data]
        if missing:
            raise ConfigError(f"{MANIFEST} lacks {', '.join(missing)}: not a vlx run manifest")
        return cls(**{k: v for k, v in data.items() if k in names})


def build(
    adapter: Any,
    *,
    stage: str,
    task: dict[str, Any],
    seed: int | None,
    prompt: str | None = None,
    lora_adapter: str | None = None,
    shots: dict[str, Any] | None = None,
    decode: str | None = None,
    generation: dict[str, Any] | None = None,
    batches: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
) -> Manifest:
    """The manifest of a run from its loaded model adapter (`vlx.models.HFAdapter`: its `checkpoint`, `model` and
    `processor`) and the run's settings.

    Args:
        adapter: the loaded model adapter.
        stage: the stage making the run.
        task: the task's name and split.
        seed: the run's seed.
        prompt: the prompt as rendered for the split's first item.
        lora_adapter: the LoRA adapter folder loaded on top of the model, or None.
        shots: the few-shot settings, or None.
        decode: the decoding (generate, score, score_then_explain).
        generation: generate()'s settings.
        batches: batch settings that change answers, or None.
        training: fine-tuning settings, or None.

    Returns:
        The manifest.
    """
    model, processor = adapter.model, adapter.processor
    image_processor = getattr(processor, "image_processor", None)
    tokenizer = getattr(processor, "tokenizer", processor)
    quantization = getattr(getattr(model, "config", None), "quantization_config", None)
    if quantization is not None and hasattr(quantization, "to_dict"):
        quantization = quantization.to_dict()
    dtype = getattr(model, "dtype", None)
    return Manifest(
        stage=stage,
        model=str(adapter.checkpoint),
        weights=weights_identity(str(adapter.checkpoint)),
        adapter=lora_adapter,
        adapter_weights=adapter_fingerprint(Path(lora_adapter)) if lora_adapter else None,
        dtype=None if dtype is None else str(dtype).removeprefix("torch."),
        quantization=_plain(quantization),
        task=_plain(task),
        shots=_plain(shots),
        prompt=prompt,
        image_processor=_plain(image_processor.to_dict()) if image_processor is not None else {},
        padding_side=getattr(tokenizer, "padding_side", None),
        decode=decode,
        generation=_plain(generation),
        seed=seed,
        batches=_plain(batches),
        training=_plain(training),
        versions=versions(),
    )


def _plain(data: Any) -> Any:
    """JSON data as it reads back from the file (tuples as lists, other objects as their text)."""
    return None if data is None else json.loads(json.dumps(data, default=str))


def versions() -> dict[str, str | None]:
    """The versions of python and of the libraries outputs depend on (None: not installed)."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    if found["vlx"] is None:  # run from a source tree that is not installed
        from vlx import __version__

        found["vlx"] = __version__
    return found


def write(run_dir: Path, manifest: Manifest) -> Path:
    """Writes `<run_dir>/manifest.json` whole or not at all; returns its path."""
    path = RunDir(run_dir).manifest
    write_json(path, manifest.to_dict())
    return path


def read(run_dir: Path) -> Manifest | None:
    """The manifest of a run directory, or None where it has none (runs made before vlx wrote manifests).

    Raises:
        ConfigError: manifest.json is there but cannot be read.
    """
    path = RunDir(run_dir).manifest
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as err:
        raise ConfigError(
            f"{path}: cannot be read ({err}); delete it to treat the run as one without a manifest"
        ) from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: holds a JSON {type(data).__name__}, not an object; delete it")
    try:
        return Manifest.from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def flat(manifest: Manifest) -> dict[str, Any]:
    """The manifest's keys flattened with dots (`generation.max_new_tokens`, `versions.torch`); lists stay values."""
    out: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(inner, f"{prefix}.{key}" if prefix else str(key))
        else:
            out[prefix] = value

    walk({k: v for k, v in manifest.to_dict().items() if k != "format"}, "")
    return out


ABSENT = object()  # a key one manifest has and the other lacks
SHOWN = 60  # characters of a long value shown, around where two values first differ


def shown(value: Any) -> str:
    """A manifest value as a diff line shows it: text as it is, anything else as JSON."""
    if value is ABSENT:
        return "(absent)"
    return value if isinstance(value, str) else json.dumps(value)


def _cut(text: str, begin: int) -> str:
    """SHOWN characters of a long text from `begin`, quoted as Python does (a line break as \\n: one line)."""
    return repr(("..." if begin else "") + text[begin : begin + SHOWN] + ("..." if begin + SHOWN < len(text) else ""))


def _one_line(text: str) -> str:
    return text if text.isprintable() else repr(text)


def _pair(a: str, b: str) -> tuple[str, str]:
    """Two values as one line shows them: long ones cut to the part around their first difference."""
    if len(a) <= SHOWN and len(b) <= SHOWN:
        return _one_line(a), _one_line(b)
    start = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    begin = max(0, start - SHOWN // 3)
    return f"{_cut(a, begin)} (from character {start})", _cut(b, begin)


def compare(a: Manifest, b: Manifest) -> dict[str, tuple[Any, Any]]:
    """The flattened keys whose values differ, with (a's value, b's value); ABSENT where one lacks the key."""
    fa, fb = flat(a), flat(b)
    keys = list(fa) + [k for k in fb if k not in fa]
    return {k: (fa.get(k, ABSENT), fb.get(k, ABSENT)) for k in keys if fa.get(k, ABSENT) != fb.get(k, ABSENT)}


def differences(a: Manifest, b: Manifest, skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None) -> list[str]:
    """One readable line per key that differs from `a` to `b` (`dtype: bfloat16 -> float16`; a long prompt shown
    around its first difference). Keys under a `skip` prefix (`versions`) are left out; with `only`, every key not
    under one of its prefixes is."""

    def under(key: str, prefixes: tuple[str, ...]) -> bool:
        return any(key == p or key.startswith(p + ".") for p in prefixes)

    lines = []
    for key, (va, vb) in compare(a, b).items():
        if under(key, skip) or (only is not None and not under(key, only)):
            continue
        left, right = _pair(shown(va), shown(vb))
        lines.append(f"{key}: {left} -> {right}")
    return lines


def differing(manifests: dict[str, Manifest | None]) -> dict[str, dict[str, Any]]:
    """Across several runs (label -> manifest, None for a run without one), the flattened keys whose value is not
    the same in every run that has a manifest: key -> {label: value (ABSENT where it lacks the key)}."""
    present = {label: flat(m) for label, m in manifests.items() if m is not None}
    keys = list(dict.fromkeys(k for f in present.values() for k in f))
    out = {}
    for key in keys:
        values = {label: f.get(key, ABSENT) for label, f in present.items()}
        first = next(iter(values.values()))
        if any(v != first for v in values.values()):
            out[key] = values
    return out


NONE_NOTE = "made before vlx recorded one, or stopped before its model loaded"


def _read_or_note(run_dir: Path) -> tuple[Manifest | None, str | None]:
    """A run's manifest, or None with why not: None where it has no manifest.json, the error's text where it cannot
    be read (never an error)."""
    try:
        return read(run_dir), None
    except ConfigError as err:
        return None, str(err)


def pair_lines(run_a: Path, run_b: Path) -> list[str]:
    """For a comparison of run B with run A: one line per manifest key that differs (A -> B), or the runs without a
    manifest, named. An empty list: both runs were made with the same settings."""
    (a, why_a), (b, why_b) = _read_or_note(run_a), _read_or_note(run_b)
    if a is not None and b is not None:
        return differences(a, b)
    return [
        why or f"{run} has no {MANIFEST} ({NONE_NOTE})"
        for run, m, why in ((run_a, a, why_a), (run_b, b, why_b))
        if m is None
    ]


def spread_lines(runs: dict[str, Path]) -> list[str]:
    """For a table of runs (label -> run directory): one line per manifest key whose value is not the same in every
    run, each value with the runs that have it (`dtype: float32 (0, 2); bfloat16 (1)`), then the runs without a
    manifest, named. An empty list: every run with a manifest was made with the same settings."""
    found = {label: _read_or_note(path) for label, path in runs.items()}
    lines = []
    for key, values in differing({label: m for label, (m, _) in found.items()}).items():
        texts = {label: shown(v) for label, v in values.items()}
        if max(map(len, texts.values())) > SHOWN:  # long text (a prompt): shown from a little before where it parts
            start = len(_common_prefix(list(texts.values())))
            begin = max(0, start - SHOWN // 3)
            texts = {k: _cut(t, begin) for k, t in texts.items()}
            key = f"{key} (from character {start})"
        else:
            texts = {k: _one_line(t) for k, t in texts.items()}
        groups: dict[str, list[str]] = {}
        for label, text in texts.items():
            groups.setdefault(text, []).append(label)
        lines.append(f"{key}: " + "; ".join(f"{t} ({', '.join(labels)})" for t, labels in groups.items()))
    lines += [why for _, why in found.values() if why]
    missing = [label for label, (m, why) in found.items() if m is None and why is None]
    if missing:
        lines.append(f"no {MANIFEST} ({NONE_NOTE}): {', '.join(missing)}")
    return lines


def _common_prefix(texts: list[str]) -> str:
    first, last = min(texts), max(texts)
    end = next((i for i, (x, y) in enumerate(zip(first, last, strict=False)) if x != y), min(len(first), len(last)))
    return first[:end]
