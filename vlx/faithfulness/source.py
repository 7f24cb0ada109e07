"""The run a faithfulness test reads: its config, task, items and predictions, and its model loaded as it was.

A run records the config keys its predictions depend on, resolved, in `run_config.json` (`vlx.stages._resume`):
the model, task, demonstrations, generation, quantization, decoding and seed. The tests rebuild the task and the
model from them, so that an edited item is answered by the same model with the same prompt and decoding as the
original, and check the loaded model against the run's manifest (`vlx.run.manifest`): weights replaced in the same
folder, another dtype or another rendered prompt would make the comparison with the run's answers meaningless.

A few-shot run's items are changed and answered with the very demonstrations the original item had: each prediction
records its demonstrations' ids (`Prediction.demos`), read back from the run's pool split (`RecordedShots`), so that
only the tested change differs between the two answers; a demonstration itself is never edited or ablated.
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
from vlx.engine.shots import ShotSelector
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


class RecordedShots(ShotSelector):
    """The demonstrations a few-shot run showed each item, as the batch loop's selector: a changed item
    (`<item id>|<change>`, as the tests name them) gets its original item's, in the same order.

    Args:
        demos: each item's demonstrations by item id, in prompt order.
    """

    def __init__(self, demos: dict[str, list[Example]]):
        super().__init__([], [], 0)
        self.demos = demos
        self.k = max((len(d) for d in demos.values()), default=0)

    def select(self, query: Example) -> list[Example]:
        """The demonstrations recorded for `query`'s item.

        Raises:
            KeyError: an item the run has no prediction for (the tests change only predicted items).
        """
        found = self.demos.get(query.id)
        if found is None:  # a changed item: its id is the original's, a "|" and the change
            found = self.demos[query.id.rsplit("|", 1)[0]]
        return list(found)


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
        shots: a few-shot run's demonstrations of each item, as its predictions record them (None: zero-shot).
    """

    run: RunDir
    config: DictConfig
    task: Task
    items: list[Example]
    predictions: dict[str, Prediction]
    first: Example
    shots: RecordedShots | None = None

    @property
    def k(self) -> int:
        """The run's demonstrations per item (0: zero-shot)."""
        return int(self.config.get("shots", {}).get("k", 0) or 0)

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
        ConfigError: no run_config.json or predictions, predictions for items the task no longer has, or (a
            few-shot run) demonstrations not recorded or no longer in the pool split.
    """
    config = run_config(run)
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
    k = int(config.get("shots", {}).get("k", 0) or 0)
    shots = recorded_shots(run, config, predictions) if k else None
    return RunSource(
        run=run, config=config, task=task, items=items, predictions=predictions, first=split.examples[0], shots=shots
    )


def recorded_shots(run: RunDir, config: DictConfig, predictions: dict[str, Prediction]) -> RecordedShots:
    """A few-shot run's demonstrations of each item: the ids its predictions record, read from the pool split
    (`shots.split`) as the run read them.

    Raises:
        ConfigError: a prediction without its demonstrations' ids, or an id the pool split no longer has.
    """
    k, pool_split = int(config.shots.k), str(config.shots.get("split", "train"))
    bare = sorted(p.id for p in predictions.values() if len(p.demos) != k)
    if bare:
        raise ConfigError(
            f"{run.predictions_file}: item {bare[0]} records {len(predictions[bare[0]].demos)} demonstrations, not "
            f"the run's shots={k} ({len(bare)} such items), so its prompt cannot be rebuilt; rerun stage=infer into "
            f"a new directory to test this setting"
        )
    pool = {ex.id: ex for ex in instantiate(config.task, split=pool_split, limit=None).examples()}
    demos = {}
    for p in predictions.values():
        gone = [d for d in p.demos if d not in pool]
        if gone:
            raise ConfigError(
                f"{run.predictions_file}: item {p.id}'s demonstration {gone[0]} is not in split {pool_split!r} of "
                f"the task now; restore the data the run was made with"
            )
        demos[p.id] = [pool[d] for d in p.demos]
    return RecordedShots(demos)


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
        quantization=build_quantization(quant) if quant else None, shots=source.k
    )
    saved = manifest.read(source.run.path)
    if saved is None:
        log.warning("%s has no manifest: the model loaded now is not checked against the run's", source.run.path)
        return model
    first = source.first
    keys: tuple[str, ...] = MODEL_KEYS
    demos: list[Example] = []
    if source.shots is not None:
        if first.id in source.predictions:
            demos = source.shots.select(first)
        else:  # the manifest's prompt holds the first item's demonstrations, which the run did not record
            keys = tuple(k for k in MODEL_KEYS if k != "prompt")
            log.warning("%s has no prediction for %s: its prompt is not checked", source.run.path, first.id)
    now = manifest.build(
        model,
        stage=saved.stage,
        task=saved.task,
        seed=saved.seed,
        prompt=render_prompt(model, source.task, first, demos),
        lora_adapter=cfg.model.get("adapter"),
    )
    differ = manifest.differences(saved, now, only=keys)
    if differ:
        raise ConfigError(
            f"stage.run={str(source.run.path)!r}: the model loaded now is not the one that made the run (saved -> "
            f"now): {'; '.join(differ)}. Restore the run's model, or test a run made with this one"
        )
    return model


def loop_settings(source: RunSource, batch_size: int | str, batching: str, workers: int) -> LoopSettings:
    """The batch loop's settings: the run's decoding, generation, seed and demonstrations (each item's recorded
    ones, their images shrunk as the run shrank them), this stage's batches."""
    cfg = source.config
    return LoopSettings(
        decode=source.decode,
        generation=plain_dict(cfg.generation, "generation") if cfg.get("generation") else {},
        batch_size=batch_size,
        batching=batching,
        seed=int(cfg.get("seed", 0)),
        workers=workers,
        on_bad_image=str(cfg.task.get("on_bad_image", "fail")),
        selector=source.shots,
        demo_image_size=cfg.shots.get("demo_image_size") if source.shots else None,
    )
