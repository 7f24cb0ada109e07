"""stage=faithfulness on tiny models whose answers are known before the test runs: a model whose label cannot
change flips nothing, a blank vision tower shows no image reliance while the untouched one does, each edit's row
holds the edit and the model's own answer to it, and a stopped test continues without answering anything twice."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import lines
from PIL import Image

from vlx.__main__ import run_stage
from vlx.engine.batches import prepare_batch
from vlx.engine.decoding import decode
from vlx.errors import ConfigError
from vlx.faithfulness import counterfactual, editor, image_reliance
from vlx.faithfulness.source import load_run_model, open_run
from vlx.run.directory import RunDir
from vlx.run.records import Prediction
from vlx.tasks.items import Example


@pytest.fixture(scope="module")
def changed_models(tmp_path_factory) -> dict[str, Path]:
    """The tiny LLaVA-NeXT saved twice, changed after loading: `blind` (the projector's output zeroed, so every
    image reaches the language model as the same zeros) and `fixed` (lm_head zeroed: every logit 0, so the scored
    label is the same whatever the input)."""
    from conftest import compose_config
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    from vlx.stages.infer import load_model

    folder = tmp_path_factory.mktemp("models")
    cfg = compose_config("model=tiny_llava", "task=shapes", run_dir=folder / "unused")
    adapter = load_model(cfg, instantiate(cfg.task))
    GlobalHydra.instance().clear()
    saved = {}
    for name, module in (
        ("blind", adapter.model.model.multi_modal_projector.linear_2),
        ("fixed", adapter.model.lm_head),
    ):
        original = {k: v.clone() for k, v in module.state_dict().items()}
        with torch.no_grad():
            for p in module.parameters():
                p.zero_()
        adapter.model.save_pretrained(folder / name)
        adapter.processor.save_pretrained(folder / name)
        module.load_state_dict(original)
        saved[name] = folder / name
    return saved


def infer(make_cfg, out: Path, *overrides: str) -> RunDir:
    """An infer run of 6 shapes items: the tiny LLaVA-NeXT and labels scored, unless `overrides` say otherwise."""
    defaults = [
        d
        for d in ("model=tiny_llava", "decode=score")
        if not any(o.startswith(d.split("=")[0] + "=") for o in overrides)
    ]
    run_stage(make_cfg(*defaults, *overrides, "task=shapes", "task.limit=6", run_dir=out))
    return RunDir(out)


def faithfulness(make_cfg, run: RunDir, *extra: str) -> dict:
    cfg = make_cfg(
        "stage=faithfulness",
        f"stage.run={run.path}",
        "batch_size=2",
        "batching=dataset",
        "stage.resamples=100",
        *extra,
        run_dir=run.path.parent / "faithfulness-run",
    )
    return run_stage(cfg)


def test_each_edit_row_holds_the_edit_and_the_models_own_answer_to_it(make_cfg, tmp_path):
    run = infer(make_cfg, tmp_path / "run")
    results = faithfulness(
        make_cfg, run, "stage.tests=[counterfactual]", "stage.positions=2", "stage.words_per_position=2"
    )
    rows = lines(run.faithfulness_file("counterfactual"))
    source = open_run(run)
    texts = {ex.id: ex.text for ex in source.items}
    assert len(rows) == 6 * 4 and len({r["id"] for r in rows}) == 24
    for r in rows:
        assert r["word"] in counterfactual.WORDS and r["id"].startswith(r["item"] + "|cf")
        assert r["text"] == counterfactual.insert_word(texts[r["item"]], r["position"], r["word"])
        assert r["text"].split()[r["position"]].lower() == r["word"]  # inserted before the token at `position`
        assert r["original_label"] == source.predictions[r["item"]].pred
        assert r["flipped"] == (r["label"] != r["original_label"])
        assert r["unfaithful"] == (r["flipped"] and r["word"] not in (r["explanation"] or "").lower())
    # the new label is what the run's model answers to the edited item alone
    model, task = load_run_model(source), source.task
    row = rows[5]
    item = next(ex for ex in source.items if ex.id == row["item"])
    edited = [Example(id=row["id"], image=item.image, text=row["text"], label=item.label)]
    answers, scores, _ = decode("score", model, task, prepare_batch(model, task, None, edited, 0, 1, None), {})
    assert row["label"] == max(scores[0], key=scores[0].get)
    assert row["scores"] == pytest.approx(scores[0], abs=1e-5)
    summary = results["counterfactual"]
    assert summary["edits"] == 24 and summary["items"] == 6 and summary["flip_rate"]["n"] == 24
    assert summary["flip_rate"]["value"] == sum(r["flipped"] for r in rows) / 24
    assert summary["settings"]["words"] == list(counterfactual.WORDS)
    # the plan is the seed's: the same again, another with another seed, and an item's edits do not depend on the sample
    plan = counterfactual.plan_edits(source.items, counterfactual.WORDS, 2, 2, 0)
    assert sorted((e.id, e.text) for e in plan) == sorted((r["id"], r["text"]) for r in rows)
    assert plan[:4] == counterfactual.plan_edits(source.items[:1], counterfactual.WORDS, 2, 2, 0)
    assert plan != counterfactual.plan_edits(source.items, counterfactual.WORDS, 2, 2, 1)


def test_a_model_whose_label_cannot_change_flips_nothing(make_cfg, tmp_path, changed_models):
    run = infer(make_cfg, tmp_path / "run", "model=hf", f"model.checkpoint={changed_models['fixed']}")
    results = faithfulness(make_cfg, run, "stage.positions=3", "stage.words_per_position=2")
    cf, image = results["counterfactual"], results["image_reliance_mean_colour"]
    assert cf["edits"] == 36 and cf["unparsed_edits"] == 0
    assert cf["flip_rate"] == {"value": 0.0, "ci": [0.0, 0.0], "n": 36}
    assert cf["item_flip_rate"]["value"] == 0.0
    assert cf["unfaithful_rate"]["value"] is None and cf["unfaithful_rate"]["n"] == 0  # no flip to judge
    assert image["flip_rate"]["value"] == 0.0 and image["probability_change"]["value"] == pytest.approx(0, abs=1e-6)


def test_a_blank_vision_tower_shows_no_image_reliance_and_the_untouched_one_does(make_cfg, tmp_path, changed_models):
    # labels scored, explanations generated: greedy, in the same batches as the run's, so the same inputs give the
    # very same answers
    explain = ("decode=score_then_explain", "generation.max_new_tokens=6", "batch_size=2", "batching=dataset")
    blind = infer(make_cfg, tmp_path / "blind", "model=hf", f"model.checkpoint={changed_models['blind']}", *explain)
    for ablation in image_reliance.ABLATIONS:
        result = faithfulness(make_cfg, blind, "stage.tests=[image_reliance]", f"stage.ablation={ablation}")
        summary = result[f"image_reliance_{ablation}"]
        assert summary["items"] == 6 and summary["unparsed_items"] == 0 and summary["flip_rate"]["value"] == 0.0
        assert summary["changed_explanation_same_label_rate"]["value"] == 0.0
        rows = lines(blind.faithfulness_file(f"image_reliance_{ablation}"))
        assert all(r["explanation_same"] and r["explanation"] for r in rows)  # word for word, and not empty
        assert max(abs(r["probability_change"]) for r in rows) < 1e-5
        images = {r["item"]: r["image"] for r in rows}
        originals = {p.id: p.image for p in open_run(blind).predictions.values()}
        assert all(images[i] != originals[i] for i in images)  # each item was shown another picture
    # the same items through the untouched vision tower: the blank images move the label's probability and change
    # explanations
    seeing = infer(make_cfg, tmp_path / "seeing", *explain)
    summary = faithfulness(make_cfg, seeing, "stage.tests=[image_reliance]")["image_reliance_mean_colour"]
    rows = lines(seeing.faithfulness_file("image_reliance_mean_colour"))
    assert max(abs(r["probability_change"]) for r in rows) > 1e-4
    assert summary["changed_explanation_same_label_rate"]["value"] > 0
    # each blank is the original's size in its mean colour
    row = rows[0]
    original, blank = (
        Image.open(open_run(seeing).predictions[row["item"]].image).convert("RGB"),
        Image.open(row["image"]),
    )
    assert blank.size == original.size and len(blank.getcolors()) == 1
    mean = np.asarray(original, dtype=float).reshape(-1, 3).mean(axis=0)
    assert blank.getcolors()[0][1] == tuple(round(m) for m in mean)


def test_a_stopped_test_continues_without_answering_anything_twice(make_cfg, tmp_path):
    run = infer(make_cfg, tmp_path / "run")
    args = ("stage.tests=[counterfactual]", "stage.positions=1", "stage.words_per_position=2")
    first = faithfulness(make_cfg, run, *args)["counterfactual"]
    path = run.faithfulness_file("counterfactual")
    whole = lines(path)
    assert first["new_rows"] == 12 and len(whole) == 12
    # a kill after the first batch, in the middle of writing the second
    text = path.read_text().splitlines(keepends=True)
    path.write_text("".join(text[:2]) + text[2][: len(text[2]) // 2])
    again = faithfulness(make_cfg, run, *args)["counterfactual"]
    assert again["new_rows"] == 10  # the first batch's two edits are not answered again
    assert sorted(lines(path), key=lambda r: r["id"]) == sorted(whole, key=lambda r: r["id"])
    assert {k: v for k, v in again.items() if k != "new_rows"} == {k: v for k, v in first.items() if k != "new_rows"}
    assert faithfulness(make_cfg, run, *args)["counterfactual"]["new_rows"] == 0
    with pytest.raises(ConfigError, match=r"made with other settings \(saved -> now\): seed: 0 -> 1"):
        faithfulness(make_cfg, run, *args, "stage.seed=1")


def test_unknown_tests_and_runs_without_a_config_are_refused(make_cfg, tmp_path):
    with pytest.raises(
        ConfigError, match=r"stage.tests=\['shap'\]: give one or more of counterfactual, image_reliance"
    ):
        faithfulness(make_cfg, RunDir(tmp_path), "stage.tests=[shap]")
    (tmp_path / "predictions.jsonl").write_text('{"id": "a", "pred": "entailment"}\n')
    with pytest.raises(ConfigError, match="no run_config.json there"):
        faithfulness(make_cfg, RunDir(tmp_path))


def test_flips_and_mentions_are_counted_per_edit_and_per_item_as_the_authors_count_them():
    before = Prediction(id="a", pred="entailment", explanation="a dog runs")
    flip_silent = counterfactual.edit_row(
        counterfactual.Edit("a|cf0", "a", "old", 1, "A old dog"),
        before,
        Prediction(id="a|cf0", pred="neutral", explanation="It runs."),
    )
    flip_said = counterfactual.edit_row(
        counterfactual.Edit("a|cf1", "a", "old", 1, "A old dog"),
        before,
        Prediction(id="a|cf1", pred="neutral", explanation="A BOLD dog"),
    )
    same = counterfactual.edit_row(
        counterfactual.Edit("a|cf2", "a", "tiny", 0, "Tiny a dog"), before, Prediction(id="a|cf2", pred="entailment")
    )
    unparsed = counterfactual.edit_row(
        counterfactual.Edit("a|cf3", "a", "tiny", 2, "a dog tiny"), before, Prediction(id="a|cf3", pred=None)
    )
    assert (flip_silent["flipped"], flip_silent["mentioned"], flip_silent["unfaithful"]) == (True, False, True)
    assert (flip_said["flipped"], flip_said["mentioned"], flip_said["unfaithful"]) == (True, True, False)  # substring
    assert (same["flipped"], same["unfaithful"]) == (False, False)
    assert (unparsed["flipped"], unparsed["unfaithful"]) == (None, None)
    other = [{**same, "id": f"b|cf{k}", "item": "b"} for k in range(3)]  # an item none of whose three edits flips
    summary = counterfactual.summarize([flip_silent, flip_said, same, unparsed, *other], resamples=200)
    assert summary["edits"] == 7 and summary["unparsed_edits"] == 1 and summary["items"] == 2
    assert summary["flip_rate"]["value"] == 2 / 6 and summary["flip_rate"]["n"] == 6
    assert summary["unfaithful_rate"]["value"] == 1 / 2 and summary["unfaithful_rate"]["n"] == 2
    assert summary["item_flip_rate"]["value"] == 1 / 2 and summary["item_unfaithful_rate"]["value"] == 1.0
    low, high = summary["flip_rate"]["ci"]
    assert low == 0.0 and high == pytest.approx(2 / 3)  # resamples of the two items: both b (0), both a (2/3)
    assert counterfactual.insert_word("There is a red circle.", 0, "tiny") == "Tiny there is a red circle."
    assert counterfactual.insert_word("There is a red circle.", 5, "now") == "There is a red circle. now"


def test_counts_equal_the_authors_random_baseline_on_crafted_edits():
    """Crafted edits and answers that copenlu/nle_faithfulness's random_baseline.py (`eval_dataset`, run outside vlx
    with these edits and answers; docs/PARITY.md) counts as: items with a flipping edit 2 of 4, items with an
    unfaithful one 1 of those 2, 3 flipping and 1 unfaithful edits, when its label column is the model's prediction
    (as its released commands set it). Against the gold label it gives 0.75 and 2/3, counting item b, which the
    model got wrong before any edit, as flipped by edits that change nothing: vlx compares with the prediction."""
    cases = {  # item: (predicted, gold, [(word, edited text, new label, new explanation)])
        "a": ("entailment", "entailment", [
            ("blue", "There is a purple blue square .", "contradiction",
             "The picture shows a Blue square, not a purple square."),  # mentioned: the test is lower-cased
            ("ill", "There is a purple ill square .", "contradiction", "The picture shows a purple square."),
            ("red", "There is a purple red square .", "entailment", "The picture shows a purple square."),
        ]),
        "b": ("entailment", "contradiction", [
            ("tiny", "There is a yellow tiny circle .", "entailment", "The picture shows a yellow circle."),
            ("quickly", "There quickly is a yellow circle .", "entailment", "The picture shows a yellow circle."),
        ]),
        "c": ("contradiction", "contradiction", [
            ("old", "There is a red old star .", "neutral", "You cannot tell whether the star is bold."),  # substring
        ]),
        "d": ("neutral", "neutral", [("never", "The black circle is never spinning .", "neutral", "You cannot tell.")]),
    }  # fmt: skip
    rows = []
    for item, (pred, gold, edits) in cases.items():
        before = Prediction(id=item, pred=pred, gold=gold, explanation="")
        for k, (word, text, label, explanation) in enumerate(edits):
            edit = counterfactual.Edit(f"{item}|cf{k}", item, word, 0, text)
            rows.append(
                counterfactual.edit_row(edit, before, Prediction(id=edit.id, pred=label, explanation=explanation))
            )
    summary = counterfactual.summarize(rows, resamples=50)
    assert summary["item_flip_rate"]["value"] == 0.5 and summary["item_unfaithful_rate"]["value"] == 0.5
    assert sum(r["flipped"] for r in rows) == 3 and sum(r["unfaithful"] for r in rows) == 1
    assert summary["flip_rate"]["value"] == 3 / 7 and summary["unfaithful_rate"]["value"] == 1 / 3
    assert [r["mentioned"] for r in rows if r["flipped"]] == [True, False, True]
    assert not any(r["flipped"] for r in rows if r["item"] == "b")


def test_words_an_editor_proposes_are_parsed_one_word_each():
    answer = '1. Tiny, 2. "bright"; very old\nNeutral and Sad. tiny'
    assert editor.parse_words(answer, 5, ("neutral",)) == ["tiny", "bright", "sad"]  # one word each, labels out
    assert editor.parse_words(answer, 2) == ["tiny", "bright"]
    assert editor.parse_words("<unk><unk>", 3) == []


def test_an_editor_model_proposes_each_items_words_once(make_cfg, tmp_path, changed_models):
    run = infer(make_cfg, tmp_path / "run")
    args = ("stage.tests=[counterfactual]", "stage.positions=1", "stage.words_per_position=2", "stage.editor_words=3")
    first = faithfulness(make_cfg, run, *args, "stage.editor=run")["counterfactual"]
    proposals = lines(run.faithfulness_proposals_file)
    assert [p["id"] for p in proposals] == [ex.id for ex in open_run(run).items]
    # each answer is the run's model's own greedy answer to the editor's question about the item
    source = open_run(run)
    model, item = load_run_model(source), source.items[2]
    question = editor.editor_task(3)
    asked, _, _ = decode(
        "generate", model, question, prepare_batch(model, question, None, [item], 0, 1, None), editor.limits(3)
    )
    assert proposals[2]["answer"] == asked[0] and proposals[2]["words"] == editor.parse_words(
        asked[0], 3, source.task.labels
    )
    words = {p["id"]: p["words"] for p in proposals}
    rows = lines(run.faithfulness_file("counterfactual"))
    assert len(rows) == 12
    for r in rows:  # the item's proposed words where it has any, else the list's
        assert r["proposed"] == bool(words[r["item"]])
        assert r["word"] in (words[r["item"]] or counterfactual.WORDS)
    assert first["settings"]["editor"] == "run" and first["settings"]["editor_prompt"] == editor.EDITOR_PROMPT_VERSION
    # run again: nothing is asked or answered twice
    again = faithfulness(make_cfg, run, *args, "stage.editor=run")["counterfactual"]
    assert again["new_rows"] == 0 and lines(run.faithfulness_proposals_file) == proposals
    # another editor: refused while the rows of this one are kept
    with pytest.raises(ConfigError, match=r"editor: 'run' -> "):
        faithfulness(make_cfg, run, *args, f"stage.editor={changed_models['fixed']}")
    run.faithfulness_file("counterfactual").unlink()
    with pytest.raises(ConfigError, match="has words proposed by editor 'run'"):
        faithfulness(make_cfg, run, *args, f"stage.editor={changed_models['fixed']}")
    # a checkpoint as editor: a zeroed lm_head answers no word, so every item falls back to the list
    run.faithfulness_proposals_file.unlink()
    faithfulness(make_cfg, run, *args, f"stage.editor={changed_models['fixed']}")
    assert all(not p["words"] for p in lines(run.faithfulness_proposals_file))
    assert not any(r["proposed"] for r in lines(run.faithfulness_file("counterfactual")))


def test_a_few_shot_runs_changed_items_are_answered_with_their_own_demonstrations(make_cfg, tmp_path):
    from vlx.engine.loop import run_batches
    from vlx.faithfulness.source import loop_settings
    from vlx.run.store import JsonlStore
    from vlx.stages.infer import prediction

    run = infer(make_cfg, tmp_path / "run", "shots=2", "fewshot.split=dev", "fewshot.per_query=true")
    results = faithfulness(make_cfg, run, "stage.positions=1", "stage.words_per_position=2")
    source = open_run(run)
    assert {len(p.demos) for p in source.predictions.values()} == {2}
    with pytest.raises(ConfigError, match=r"few-shot run \(shots=2\): CC-SHAP's players are one prompt's"):
        faithfulness(make_cfg, run, "stage.tests=[cc_shap]")
    assert len({p.demos for p in source.predictions.values()}) > 1  # drawn per item: each its own
    model, task = load_run_model(source), source.task
    # an unchanged query, re-answered through the tests' loop, is the run's own answer: same demonstrations, label
    # and scores; without its demonstrations it is not
    same = [replace(ex, id=f"{ex.id}|same") for ex in source.items]
    store = JsonlStore(tmp_path / "same.jsonl")
    run_batches(
        model,
        task,
        same,
        store,
        lambda a: prediction(task, a.example, a.text, a.demos, a.scores).to_json(),
        loop_settings(source, 2, "dataset", 0),
        desc="same",
    )
    for row in store.rows():
        original = source.predictions[row["id"].removesuffix("|same")]
        assert tuple(row["demos"]) == original.demos and row["pred"] == original.pred
        assert row["scores"] == pytest.approx(original.scores, abs=1e-5)
    bare = prepare_batch(model, task, None, source.items[:1], 0, 1, None)
    assert decode("score", model, task, bare, {})[1][0] != pytest.approx(source.predictions[source.items[0].id].scores)
    # each edit's and each blank's answer is the model's with the original item's demonstrations, only the query
    # changed
    for name, key in (("counterfactual", "text"), ("image_reliance_mean_colour", "image")):
        row = lines(run.faithfulness_file(name))[3]
        item = next(ex for ex in source.items if ex.id == row["item"])
        changed = [replace(item, id=row["id"], **{key: row[key] if key == "text" else Path(row[key])})]
        batch = prepare_batch(model, task, source.shots, changed, 0, 1, None)
        assert [d.id for d in batch.demos[0]] == list(source.predictions[item.id].demos)
        assert row["scores"] == pytest.approx(decode("score", model, task, batch, {})[1][0], abs=1e-5)
    assert results["counterfactual"]["edits"] == 12 and results["image_reliance_mean_colour"]["items"] == 6


def test_a_few_shot_model_whose_label_cannot_change_flips_nothing(make_cfg, tmp_path, changed_models):
    run = infer(
        make_cfg, tmp_path / "run", "model=hf", f"model.checkpoint={changed_models['fixed']}", "shots=3",
        "fewshot.split=dev",
    )  # fmt: skip
    results = faithfulness(make_cfg, run, "stage.positions=2", "stage.words_per_position=1")
    assert results["counterfactual"]["flip_rate"] == {"value": 0.0, "ci": [0.0, 0.0], "n": 12}
    assert results["image_reliance_mean_colour"]["flip_rate"]["value"] == 0.0


def test_a_few_shot_run_without_its_demonstrations_recorded_is_one_line(make_cfg, tmp_path):
    run = infer(make_cfg, tmp_path / "run", "shots=2", "fewshot.split=dev")
    rows = lines(run.predictions_file)
    run.predictions_file.write_text("".join(json.dumps({**r, "demos": []}) + "\n" for r in rows))
    with pytest.raises(ConfigError, match=r"jsonl: item \S+ records 0 demonstrations, not the run.s shots=2"):
        faithfulness(make_cfg, run)


@pytest.mark.slow
def test_a_fine_tuned_runs_tests_load_its_adapter_and_refuse_another(make_cfg, tmp_path):
    from safetensors.torch import load_file, save_file

    from vlx.engine.loop import run_batches
    from vlx.faithfulness.source import loop_settings
    from vlx.run.store import JsonlStore
    from vlx.stages.infer import prediction

    def finetune(*tests: str) -> dict:
        return run_stage(
            make_cfg(
                "stage=finetune", "model=tiny_paligemma", "task=shapes", "task.prompt='explain en {text}'",
                "task.split=train", "task.limit=8", "lora=r64", "finetune.per_device_batch_size=4",
                "finetune.max_steps=2", "finetune.warmup_steps=0", "finetune.learning_rate=2e-2",
                "finetune.save_strategy=no", "finetune.infer_split=test", "finetune.infer_limit=4",
                "eval_after_infer=false", "decode=score_then_explain", "generation.max_new_tokens=4", *tests,
                run_dir=tmp_path / "ft",
            )
        )  # fmt: skip

    finetune("finetune.faithfulness={tests: [image_reliance]}")
    run = RunDir(tmp_path / "ft" / "infer")  # tested after the inference (finetune.faithfulness)
    results = json.loads(run.faithfulness_results_file.read_text())
    assert results["image_reliance_mean_colour"]["items"] == 4
    assert len(lines(run.faithfulness_file("image_reliance_mean_colour"))) == 4
    # other tests after a finished fine-tune: nothing trained again, the new test added
    weights = tmp_path / "ft" / "adapter" / "adapter_model.safetensors"
    trained = weights.stat().st_mtime_ns
    again = finetune("finetune.faithfulness={tests: [image_reliance], ablation: other_item}")
    assert weights.stat().st_mtime_ns == trained
    assert len(lines(run.faithfulness_file("image_reliance_other_item"))) == 4
    assert "faithfulness_image_reliance_other_item_flip_rate" in again
    source = open_run(run)
    assert source.config.model.adapter == str(tmp_path / "ft" / "adapter")
    model, task = load_run_model(source), source.task
    # the run's own answers again, which the base model alone does not give
    same = [replace(ex, id=f"{ex.id}|same") for ex in source.items]
    store = JsonlStore(tmp_path / "same.jsonl")
    answer = lambda a: prediction(task, a.example, a.text, a.demos, a.scores).to_json()  # noqa: E731
    run_batches(model, task, same, store, answer, loop_settings(source, 4, "dataset", 0), desc="same")
    for row in store.rows():
        assert row["scores"] == pytest.approx(source.predictions[row["id"].removesuffix("|same")].scores, abs=1e-5)
    model.model.disable_adapter_layers()
    bare = prepare_batch(model, task, None, source.items[:1], 0, 1, None)
    assert decode("score", model, task, bare, {})[1][0] != pytest.approx(source.predictions[source.items[0].id].scores)
    # an adapter changed in the same folder is not the one that made the run
    tensors = load_file(weights)
    save_file({k: v + 0.01 for k, v in tensors.items()}, weights)
    with pytest.raises(ConfigError, match=r"the model loaded now is not the one that made the run .*adapter_weights"):
        faithfulness(make_cfg, run, "stage.ablation=other_item")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("{tests: [shap]}", r"finetune.faithfulness: stage.tests=\['shap'\]: give one or more of counterfactual"),
        ("{tests: [image_reliance], ablaton: other_item}", r"finetune.faithfulness.ablaton: not a setting of the"),
        ("{run: elsewhere}", r"finetune.faithfulness.run: not a setting of the faithfulness tests; use tests, "),
    ],
)
def test_tests_after_training_are_checked_before_it(make_cfg, settings, message, no_model_loads):
    cfg = make_cfg(
        "stage=finetune", "model=tiny_paligemma", "task=shapes", "lora=r64", "finetune.infer_split=test",
        f"finetune.faithfulness={settings}",
    )  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        run_stage(cfg)
