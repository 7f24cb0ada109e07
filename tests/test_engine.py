"""The prediction engine's public batch loop, as a stage to come would use it: a third "stage", a few lines in this
file, runs the tiny LLaVA-NeXT over items through `run_batches` and gets rows appended batch by batch, that a stopped
run continues, without a loop of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import lines
from hydra.utils import instantiate

from vlx.engine.batches import prepare_batch
from vlx.engine.decoding import decode
from vlx.engine.loop import Answer, LoopResult, LoopSettings, run_batches
from vlx.errors import Interrupted
from vlx.run.store import JsonlStore
from vlx.stages.infer import load_model
from vlx.tasks.items import Example

GENERATION = {"do_sample": False, "max_new_tokens": 4}


def caption_stage(model, task, items: list[Example], out: Path, decode: str = "generate", row=None) -> LoopResult:
    """A new stage: one row per item in out/captions.jsonl, appended batch by batch; run again, it does the rest."""
    settings = LoopSettings(decode=decode, generation=GENERATION, batch_size=2, batching="dataset")
    row = row or (lambda answer: {"id": answer.example.id, "caption": answer.text, "scores": answer.scores})
    return run_batches(model, task, items, JsonlStore(out / "captions.jsonl"), row, settings, desc="caption")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from conftest import compose_config
    from hydra.core.global_hydra import GlobalHydra

    cfg = compose_config("model=tiny_llava", "task=shapes", "task.limit=5", run_dir=tmp_path_factory.mktemp("run"))
    task = instantiate(cfg.task)
    yield load_model(cfg, task), task, task.load().examples
    GlobalHydra.instance().clear()


def test_a_new_stage_runs_the_loop_and_continues_where_it_stopped(tiny, tmp_path):
    model, task, items = tiny
    whole = caption_stage(model, task, items, tmp_path / "whole")
    rows = lines(tmp_path / "whole" / "captions.jsonl")
    assert [r["id"] for r in rows] == [ex.id for ex in items] and whole.answered == 5
    assert whole.choice is not None and whole.choice.size == 2 and whole.batch_size == 2 and not whole.skipped
    assert len(whole.prompt_tokens) == 5 and all(t > 0 for t in whole.prompt_tokens)
    # each row holds the model's own answer to its item, as a batch of that item alone decodes it
    alone = decode("generate", model, task, prepare_batch(model, task, None, items, 3, 1, None), GENERATION)[0]
    assert rows[3]["caption"] == alone[0] and rows[3]["scores"] is None

    calls = []

    def stopped_in_the_second_batch(answer: Answer) -> dict:
        calls.append(answer.example.id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return {"id": answer.example.id, "caption": answer.text, "scores": answer.scores}

    with pytest.raises(Interrupted, match=r"interrupted after 2 of 5 items \(2 in this run, all saved in .*captions"):
        caption_stage(model, task, items, tmp_path / "parts", row=stopped_in_the_second_batch)
    assert len(lines(tmp_path / "parts" / "captions.jsonl")) == 2  # the first batch, on disk
    rest = caption_stage(model, task, items, tmp_path / "parts")
    assert rest.answered == 3  # only the items not yet in the file
    assert lines(tmp_path / "parts" / "captions.jsonl") == rows  # as if never stopped
    again = caption_stage(model, task, items, tmp_path / "parts")
    assert again.answered == 0 and again.choice is None  # nothing left: the batch size is not even chosen


def test_a_new_stage_scores_labels_through_the_same_loop(tiny, tmp_path):
    model, task, items = tiny
    result = caption_stage(model, task, items[:3], tmp_path, decode="score")
    rows = lines(tmp_path / "captions.jsonl")
    assert result.answered == 3 and [r["id"] for r in rows] == [ex.id for ex in items[:3]]
    for r in rows:
        assert set(r["scores"]) == set(task.labels) and sum(r["scores"].values()) == pytest.approx(1)
        assert r["caption"] == task.stated(max(r["scores"], key=r["scores"].get))
