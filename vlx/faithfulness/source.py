"""The run a faithfulness test reads: its config, task, items and predictions, and its model loaded as it was.

A run records the config keys its predictions depend on, resolved, in `run_config.json` (`vlx.stages._resume`):
the model, task, demonstrations, generation, quantization, decoding and seed. The tests rebuild the task and the
model from them, so that an edited item is answered by the same model with the same prompt and decoding as the
original, and check the loaded model against the run's manifest (`vlx.run.manifest`): weights replaced in the same
folder, another dtype or another rendered prompt would make the comparison with the run's answers meaningless.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from vlx.config_data import plain_dict
from vlx.engine.batches import render_prompt
from vlx.engine.loop import LoopSettings
from vlx.errors import ConfigError
from vlx.models.hf import VLMAdapter
from vlx.run import manifest
from vlx.run.directory import RunDir
from vlx.run.records import Prediction
from vlx.run.store import read_json
from vlx.tasks import Task
from vlx.tasks.items import Example

log = logging.getLogger(__name__)

# the manifest's keys that say which model answered and how its inputs were made: a test's model must match them
MODEL_KEYS = ("model", "weights", "adapter", "adapter_weights", "dtype", "quantization", "prompt", "image_processor")


@dataclass(frozen=True)
class RunSource:
    """A finished infer run as the faithfulness tests read it.

    Attributes:
        run: the run directory.
        config: the run's own config (model, task, shots, generation, quant, decode, seed), resolved as it ran.
        task: the run's task, built from that config.
        items: the run's items (those with a prediction), in the split's order.
        predictions: the run's predictions by item id.
        first: the split's first item, whose rendered prompt the run's manifest holds.
    """

    run: RunDir
    config: DictConfig
    task: Task
    items: list[Example]
    predictions: dict[str, Prediction]
    first: Example

    @property
    def decode(self) -> str:
        """How the run decoded: generate, score or score_then_explain."""
        return str(self.config.get("decode", "generate"))


def run_config(run: RunDir) -> DictConfig:
    """The run's config as `run_config.json` records it (dotted keys, resolved), nested again.

    Raises:
        ConfigError: the run has no run_config.json (a folder not written by stage=infer).
    """
    path = run.run_config_file
    if not path.is_file():
        raise ConfigError(
            f"stage.run={str(run.path)!r}: no {path.name} there, so the model, prompt and decoding the run used are "
            f"unknown; pass the directory of a stage=infer run"
        )
    nested: dict[str, Any] = {}
    for key, value in read_json(path, "written by stage=infer").items():
        node = nested
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return OmegaConf.create(nested)


def open_run(run: RunDir) -> RunSource:
    """The run's config, task, items and predictions; every item and image checked before a model loads.

    Raises:
        ConfigError: no run_config.json or predictions, a few-shot run (not supported yet), or predictions for
            items the task no longer has.
    """
    config = run_config(run)
    if int(config.get("shots", {}).get("k", 0) or 0):
        raise ConfigError(
            f"stage.run={str(run.path)!r} is a few-shot run (shots={config.shots.k}); the faithfulness tests run "
            f"zero-shot runs only so far: test a run made with shots=0"
        )
    predictions = {p.id: p for p in run.predictions("test")}
    task: Task = instantiate(config.task)
    split = task.load()
    items = [ex for ex in split.examples if ex.id in predictions]
    missing = sorted(set(predictions) - {ex.id for ex in items})
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ConfigError(
            f"{run.predictions_file}: {len(missing)} predicted items are not in task {task.name!r} "
            f"split {task.split!r} now ({shown}); restore the data the run was made with"
        )
    return RunSource(run=run, config=config, task=task, items=items, predictions=predictions, first=split.examples[0])


def sample_items(items: list[Example], sample: int | None, seed: int) -> list[Example]:
    """`sample` items drawn without repeats with `seed`, in the run's order; all of them where `sample` is None or
    at least their number."""
    if sample is None or sample >= len(items):
        return list(items)
    if sample < 1:
        raise ConfigError(f"stage.sample={sample}: give a positive number of items, or null for all of them")
    chosen = set(random.Random(seed).sample(range(len(items)), sample))
    return [ex for i, ex in enumerate(items) if i in chosen]


def load_run_model(source: RunSource) -> VLMAdapter:
    """The run's model, adapter and quantization as the run loaded them, checked against its manifest.

    Raises:
        ConfigError: the model loaded now differs from the one that made the run (each difference listed).
    """
    from vlx.stages._common import build_quantization

    cfg = source.config
    quant = cfg.get("quant") or None
    model: VLMAdapter = instantiate(cfg.model, _partial_=True)(
        quantization=build_quantization(quant) if quant else None, shots=0
    )
    saved = manifest.read(source.run.path)
    if saved is None:
        log.warning("%s has no manifest: the model loaded now is not checked against the run's", source.run.path)
        return model
    first = source.first
    now = manifest.build(
        model,
        stage=saved.stage,
        task=saved.task,
        seed=saved.seed,
        prompt=render_prompt(model, source.task, first),
        lora_adapter=cfg.model.get("adapter"),
    )
    differ = manifest.differences(saved, now, only=MODEL_KEYS)
    if differ:
        raise ConfigError(
            f"stage.run={str(source.run.path)!r}: the model loaded now is not the one that made the run (saved -> "
            f"now): {'; '.join(differ)}. Restore the run's model, or test a run made with this one"
        )
    return model


def loop_settings(source: RunSource, batch_size: int | str, batching: str, workers: int) -> LoopSettings:
    """The batch loop's settings: the run's decoding, generation and seed, this stage's batches."""
    cfg = source.config
    return LoopSettings(
        decode=source.decode,
        generation=plain_dict(cfg.generation, "generation") if cfg.get("generation") else {},
        batch_size=batch_size,
        batching=batching,
        seed=int(cfg.get("seed", 0)),
        workers=workers,
        on_bad_image=str(cfg.task.get("on_bad_image", "fail")),
    )
