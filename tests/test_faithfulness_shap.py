"""The cc_shap faithfulness test on tiny models whose Shapley values are known before the test runs: a blank vision
tower gives the image no share of the label, a model whose output cannot depend on its input gives no contribution
(and so no CC-SHAP, without a crash), the values add up to f(all) - f(none) (Shapley efficiency), a seed gives the
same values again, and a stopped test continues where it stopped."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import lines
from test_faithfulness import changed_models, faithfulness, infer  # noqa: F401 - the models' fixture, shared

from vlx.errors import ConfigError
from vlx.faithfulness import cc_shap, shapley
from vlx.faithfulness.source import load_run_model, open_run
from vlx.run.directory import RunDir
from vlx.run.records import Prediction

# small budgets: 2 x 2 patches and one permutation (2 x players + 1 evaluations) per output
FAST = ("stage.tests=[cc_shap]", "stage.shap_evals=1", "stage.shap_patches=2")
EXPLAIN = ("decode=score_then_explain", "generation.max_new_tokens=5")


def loaded(run_dir: RunDir):
    """The run's model, task and items, as the stage loads them."""
    source = open_run(run_dir)
    return load_run_model(source), source.task, source.items, source.predictions


def test_a_blank_vision_tower_gives_the_image_no_share_and_a_fixed_output_no_contribution(
    make_cfg,
    tmp_path,
    changed_models,  # noqa: F811 - the fixture imported above
):
    blind = infer(make_cfg, tmp_path / "blind", "model=hf", f"model.checkpoint={changed_models['blind']}", *EXPLAIN)
    model, task, items, predictions = loaded(blind)
    example = items[0]
    values = shapley.explain_output(
        model, task, example, model.answer_prefix + task.label_text("entailment"), evals=120, seed=0, patches=2
    )
    assert values.image_players == 4 and values.values.shape[0] == 4 + len(values.text_tokens)
    assert np.all(values.values[:4] == 0)  # masking a patch changes nothing the language model sees
    assert np.abs(values.values[4:]).sum() > 0
    assert cc_shap.text_share(values.values, 4) == 1.0
    # the whole test on the blind run: text shares 1 for the label and for the explanation after it
    result = faithfulness(make_cfg, blind, *FAST, "stage.sample=2")["cc_shap"]
    assert result["items"] == 2 and result["items_with_cc_shap"] == 2
    assert result["text_share_label"]["value"] == 1.0 and result["text_share_explanation"]["value"] == 1.0
    assert -1 <= result["cc_shap"]["value"] <= 1
    rows = lines(blind.faithfulness_file("cc_shap"))
    assert all(r["ratios_label"][:4] == [0.0] * 4 and r["ratios_explanation"][:4] == [0.0] * 4 for r in rows)
    # lm_head zeroed: every logit 0 whatever the input, so every value is 0 and no ratio exists
    fixed = infer(make_cfg, tmp_path / "fixed", "model=hf", f"model.checkpoint={changed_models['fixed']}", *EXPLAIN)
    result = faithfulness(make_cfg, fixed, *FAST, "stage.sample=2")["cc_shap"]
    rows = lines(fixed.faithfulness_file("cc_shap"))
    assert result["items"] == 2 and result["items_with_cc_shap"] == 0 and result["cc_shap"]["value"] is None
    assert result["text_share_label"] == {"value": None, "ci": None, "n": 0}
    for r in rows:
        assert r["cc_shap"] is None and r["text_share_label"] is None and r["ratios_label"] is None
        assert r["note"] == "every contribution is 0: no ratios, so no CC-SHAP" and r["evals"] > 100
    # (its greedy explanations are empty: one given by hand has no contribution either)
    model, task, items, _ = loaded(fixed)
    given = Prediction(id=items[0].id, pred="neutral", explanation="It is a black square.")
    row = cc_shap.cc_shap_row(
        model, task, items[0], given, evals=1, seed=0, patches=2, logits="teacher_forced", batch_size=8
    )
    assert row["explanation_tokens"] and row["ratios_explanation"] is None and row["text_share_explanation"] is None
    assert row["cc_shap"] is None and row["js_distance"] is None and row["note"].startswith("every contribution is 0")


def test_values_add_up_to_the_change_from_no_player_to_all_and_a_seed_gives_them_again(make_cfg, tmp_path):
    run = infer(make_cfg, tmp_path / "run", *EXPLAIN)
    model, task, items, predictions = loaded(run)
    example, prediction = items[1], predictions[items[1].id]
    stated = task.stated(prediction.pred)
    output = task.answer(prediction.pred, prediction.explanation)[len(stated) :]
    context = model.answer_prefix + stated
    for logits in shapley.LOGITS:
        values = shapley.explain_output(
            model, task, example, output, context=context, evals=300, seed=3, patches=3, logits=logits, batch_size=5
        )
        players = values.values.shape[0]
        assert values.permutations == 300 // (2 * players + 1)
        assert values.evals == values.permutations * (2 * players + 1)
        game = shapley.MaskedInputGame(
            model, shapley.render_prompt(model, task, example), shapley.load_rgb(example.image), context, output, 3,
            logits, 4,
        )  # fmt: skip
        assert game.players == players and values.context_players > 0
        everything, nothing = shapley.coalition_values(game, [[1] * players, [0] * players])
        assert values.base == pytest.approx(nothing, abs=1e-4)
        assert values.values.sum(axis=0) == pytest.approx(everything - nothing, abs=1e-3)
        again = shapley.explain_output(
            model, task, example, output, context=context, evals=300, seed=3, patches=3, logits=logits, batch_size=3
        )
        assert np.allclose(again.values, values.values, atol=1e-4)  # the seed's permutations, whatever the batches
    other = shapley.explain_output(model, task, example, output, context=context, evals=300, seed=4, patches=3)
    assert not np.allclose(other.values, values.values, atol=1e-4)


def test_a_stopped_test_continues_and_changed_settings_are_refused(make_cfg, tmp_path):
    run = infer(make_cfg, tmp_path / "run", *EXPLAIN)
    first = faithfulness(make_cfg, run, *FAST, "stage.sample=3")["cc_shap"]
    path = run.faithfulness_file("cc_shap")
    whole = lines(path)
    assert first["new_rows"] == 3 and len(whole) == 3 and first["items_with_cc_shap"] == 3
    assert all(r["permutations"] == 1 for r in whole)  # 1 evaluation < 2 x players + 1: one permutation
    assert first["evals_per_item"]["value"] == pytest.approx(sum(r["evals"] for r in whole) / 3)
    assert first["settings"] == {
        "sample": 3, "seed": 0, "shap_evals": 1, "shap_patches": 2, "shap_logits": "teacher_forced"
    }  # fmt: skip
    text = path.read_text().splitlines(keepends=True)
    path.write_text("".join(text[:2]) + text[2][: len(text[2]) // 2])  # killed while writing the last row
    again = faithfulness(make_cfg, run, *FAST, "stage.sample=3")["cc_shap"]
    assert again["new_rows"] == 1
    redone = lines(path)
    assert [r["id"] for r in redone] == [r["id"] for r in whole]
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in redone] == [
        {k: v for k, v in r.items() if k not in drop} for r in whole
    ]  # the item's own seed: the same values as before the kill
    assert again["cc_shap"] == first["cc_shap"] and again["text_share_label"] == first["text_share_label"]
    with pytest.raises(ConfigError, match=r"made with other settings \(saved -> now\): shap_evals: 1 -> 300"):
        faithfulness(make_cfg, run, *FAST, "stage.sample=3", "stage.shap_evals=300")


def test_items_without_an_explanation_get_the_labels_values_alone(make_cfg, tmp_path):
    run = infer(make_cfg, tmp_path / "run")  # decode=score: labels only
    result = faithfulness(make_cfg, run, *FAST, "stage.sample=2")["cc_shap"]
    assert result["items"] == 2 and result["items_without_explanation"] == 2 and result["items_with_cc_shap"] == 0
    assert 0 < result["text_share_label"]["value"] < 1 and result["text_share_explanation"]["value"] is None
    model, task, items, _ = loaded(run)
    row = cc_shap.cc_shap_row(
        model, task, items[0], Prediction(id=items[0].id), evals=10, seed=0, patches=2, logits="teacher_forced",
        batch_size=8,
    )  # fmt: skip
    assert row["note"] == "unparsed label: nothing to explain" and row["evals"] == 0


@pytest.mark.parametrize(
    "setting, message",
    [
        ("stage.shap_evals=0", "stage.shap_evals=0: give a number of model evaluations"),
        ("stage.shap_patches=0", "stage.shap_patches=0: give the image's patches per side"),
        ("stage.shap_logits=last", "stage.shap_logits='last': use one of teacher_forced, first_position"),
    ],
)
def test_bad_shap_settings_are_refused_before_a_model_loads(make_cfg, tmp_path, setting, message):
    with pytest.raises(ConfigError, match=message):
        faithfulness(make_cfg, RunDir(tmp_path / "x"), "stage.tests=[cc_shap]", setting)


def test_ratios_and_measures_are_the_authors():
    # two players and one image patch: ratios are value / sum |value| x 100, averaged over output tokens
    values = np.array([[1.0, 0.0], [-3.0, 2.0], [4.0, 2.0]])  # [players, output tokens]
    assert cc_shap.contribution_ratios(values).tolist() == pytest.approx([6.25, 6.25, 50.0])
    # the last player marginalized (the label before an explanation): left out of ratios and of their sums
    assert cc_shap.contribution_ratios(values, 1).tolist() == pytest.approx([12.5, 12.5])
    assert cc_shap.text_share(values, 1) == pytest.approx(11 / 12)
    measures = cc_shap.consistency(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]))
    assert measures["cc_shap"] == pytest.approx(1) and measures["mse"] == 0 and measures["js_distance"] == 0
    assert cc_shap.consistency(np.array([1.0, -1.0]), np.array([-1.0, 1.0]))["cc_shap"] == pytest.approx(-1)
    assert cc_shap.contribution_ratios(np.zeros((3, 2))) is None and cc_shap.text_share(np.zeros((3, 2)), 1) is None


@pytest.mark.parametrize("family", ["qwen2_5_vl", "paligemma"])
def test_other_families_values_add_up_too(make_cfg, tmp_path, family):
    run = infer(make_cfg, tmp_path / "run", "model=tiny", f"model.tiny={family}", *EXPLAIN)
    model, task, items, predictions = loaded(run)
    example = items[0]
    output = model.answer_prefix + task.label_text(predictions[example.id].pred)
    values = shapley.explain_output(model, task, example, output, evals=50, seed=0, patches=2)
    game = shapley.MaskedInputGame(
        model, shapley.render_prompt(model, task, example), shapley.load_rgb(example.image), "", output, 2
    )
    everything, nothing = shapley.coalition_values(game, [[1] * game.players, [0] * game.players])
    assert values.values.sum(axis=0) == pytest.approx(everything - nothing, abs=1e-3)
    assert not any("<" in t for t in values.text_tokens)  # the template's and image's tokens are never players
    assert 0 < cc_shap.text_share(values.values, 4) < 1


def test_a_label_is_explained_without_the_lone_space_a_tokenizer_writes_before_it(make_cfg, tmp_path):
    # the tiny tokenizer writes " B" as " " + "B": the space's logit is the answer's spacing, not the label, and is
    # left out of the explained outputs (it joins the context, where it is no player)
    run = infer(make_cfg, tmp_path / "run")
    model, task, items, _ = loaded(run)
    tokenizer = model.processor.tokenizer
    assert [tokenizer.decode([i]) for i in tokenizer(" B", add_special_tokens=False).input_ids] == [" ", "B"]
    values = shapley.explain_output(model, task, items[0], " B", evals=50, seed=0, patches=2)
    assert values.output_tokens == ["B"] and values.values.shape[1] == 1
    whole = shapley.explain_output(model, task, items[0], "B", evals=50, seed=0, patches=2)
    assert whole.output_tokens == ["B"]
