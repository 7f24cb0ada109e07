"""The judge stage: a tiny model judges a finished run's explanations on e-ViL's scale; the parser of judges'
answers, the score, resuming, refusals, the judge's own judge.json beside eval's metrics.json, and W&B."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import lines, placeholder_image, wandb_run

from vlx.__main__ import CONFIG_DIR, run_stage
from vlx._cli import config_mistake
from vlx.errors import ConfigError
from vlx.judging.prompts import JUDGE_PROMPT_VERSION, JUDGE_PROMPTS, prompt_kind
from vlx.judging.verdicts import VERDICT_SCORES, parse_verdict, read_verdicts
from vlx.metrics.judge_scores import judge_scores
from vlx.run.directory import RunDir
from vlx.run.records import Verdict

LABELS = ["entailment", "contradiction", "neutral"]
SHAPES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "star")]
SIZES = [(40, 30), (30, 60), (56, 56), (64, 32)]


def finished_run(root: Path, n: int = 10) -> Path:
    """A finished infer run made by hand: predictions.jsonl (some labels right, one unread, one item without an
    explanation), summary.json and a metrics.json with eval's keys."""
    run = root / "run"
    run.mkdir(parents=True)
    rows = []
    for i in range(n):
        colour, shape = SHAPES[i % 4]
        image = placeholder_image(root / "images" / f"{i % 4}.png", SIZES[i % 4], (60 * (i % 4), 90, 150))
        gold = LABELS[i % 3]
        pred = gold if i % 4 != 3 else LABELS[(i + 1) % 3]
        explanation = f"The picture shows a {colour} {shape}."
        rows.append(
            {
                "id": f"item-{i:02d}",
                "image": str(image),
                "text": f"There is a {colour} {shape}.",
                "gold": gold,
                "pred": pred,
                "explanation": explanation,
                "raw": f"{pred.capitalize()}. {explanation}",
                "refs": [explanation],
                "demos": [],
            }
        )
    rows[5]["pred"] = None  # an answer whose label the parser could not read
    rows[6]["explanation"] = ""  # a label without an explanation
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    info = {
        "task": "shapes",
        "split": "test",
        "labels": LABELS,
        "model": "tiny_llava",
        "checkpoint": "x",
        "adapter": None,
        "shots": 0,
    }
    (run / "summary.json").write_text(json.dumps({"items": n, "run": info}))
    (run / "metrics.json").write_text(json.dumps({"accuracy": 0.7, "bleu4": 0.25, "notes": ["kept"]}))
    return run


def judge_cfg(make_cfg, run: Path, *extra: str, out: Path | None = None):
    return make_cfg(
        "stage=judge",
        f"stage.run={run}",
        "judge_model=tiny_llava",
        "batch_size=3",
        "eval.resamples=50",
        *extra,
        run_dir=out or run.parent / "judge-run",
    )


# --- the parser ---------------------------------------------------------------------------------------------------

READABLE = [
    ("Yes", "yes"), ("yes.", "yes"), ("YES", "yes"), ("Weak yes", "weak yes"), ("weak-yes", "weak yes"),
    ("Weakly yes", "weak yes"), ("Weak Yes.", "weak yes"), ("weak_no", "weak no"), ("Answer: weak no", "weak no"),
    ("**No**", "no"), ("No, the explanation does not mention the square.", "no"),
    ("The answer is: weak yes", "weak yes"), ("Yes — the explanation names the red circle.", "yes"),
    ("Final answer: No", "no"), ("Verdict - yes", "yes"), ("'Weak no'", "weak no"), ("(weak no)", "weak no"),
    ("**Weak yes** - it names the shape but not its colour", "weak yes"), ("\n\nYes", "yes"),
    ("Looking at the image, I would say weak no.", "weak no"), ("The explanation ignores the colour. No.", "no"),
    ("The model says yes, but I'd say no", "no"),
]  # fmt: skip
UNREADABLE = [
    "Not really", "not sure", "None of them", "Nothing in the image", "Yesterday I saw a circle", "nope", "noo",
    "Answer: nothing", "yes or no", "Yes/No", "weak", "There is no square.", "", "Strongly agree",
    "The answer is correct and the explanation is fine",
]  # fmt: skip


@pytest.mark.parametrize(("text", "verdict"), READABLE)
def test_parser_reads_realistic_answers(text, verdict):
    assert parse_verdict(text) == verdict


@pytest.mark.parametrize("text", UNREADABLE)
def test_parser_never_guesses(text):
    """No "no" in "not", "none", "nothing", no "yes" in "yesterday", and two verdicts are none."""
    assert parse_verdict(text) is None


def test_prompt_kinds():
    assert prompt_kind(LABELS) == "entailment" and prompt_kind(["not offensive", "offensive"]) == "meme"
    assert prompt_kind(["A", "B", "C", "D"]) == "generic"
    for prompt in JUDGE_PROMPTS.values():
        assert "yes, weak yes, weak no, no" in prompt
        assert {"{text}", "{pred}", "{explanation}"} <= set(re.findall(r"\{\w+\}", prompt))


# --- the score ----------------------------------------------------------------------------------------------------


def test_score_is_evils_mean_over_correctly_labelled_items():
    def row(verdict, correct):
        return Verdict(id="x", score=None if verdict is None else VERDICT_SCORES[verdict], correct=correct)

    rows = [
        row("yes", True),
        row("weak yes", True),
        row("weak no", True),
        row("no", True),
        row("yes", True),
        row("no", False),
        row("yes", False),
        row(None, True),
        row(None, False),
    ]
    scores = judge_scores(rows, resamples=200, level=0.9, seed=1)
    assert scores["judge_score"] == pytest.approx((1 + 2 / 3 + 1 / 3 + 0 + 1) / 5)  # S_E = 3/5
    assert scores["judge_n"] == 5  # the unread answers are left out, not guessed
    assert scores["all_judge_score"] == pytest.approx(4 / 7) and scores["all_judge_n"] == 7
    low, high = scores["judge_score_ci"]
    assert 0 <= low <= 0.6 <= high <= 1
    assert judge_scores(rows, resamples=0)["judge_score_ci"] is None
    assert judge_scores([row(None, True)])["judge_score"] is None


# --- the stage on a tiny judge ---------------------------------------------------------------------------------------


def test_judge_writes_a_verdict_for_every_item(make_cfg, tmp_path):
    run = finished_run(tmp_path)
    result = run_stage(judge_cfg(make_cfg, run))
    folder = run / "judgements" / "tiny_llava"
    predictions = lines(run / "predictions.jsonl")
    verdicts = lines(folder / "verdicts.jsonl")
    assert [v["id"] for v in verdicts] == [p["id"] for p in predictions]  # every item, in the run's order
    assert all(v["prompt_version"] == JUDGE_PROMPT_VERSION and v["judge"] == "tiny_llava" for v in verdicts)
    asked = [v for v in verdicts if "note" not in v]
    assert len(asked) == 8 and all(isinstance(v["raw"], str) for v in asked)  # the judge's text, kept
    for v in asked:
        assert v["verdict"] == parse_verdict(v["raw"]) and v["score"] == (
            None if v["verdict"] is None else VERDICT_SCORES[v["verdict"]]
        )
    unasked = {v["id"]: v for v in verdicts if "note" in v}
    assert unasked["item-05"]["verdict"] is None and unasked["item-05"]["raw"] is None  # no label to justify
    assert unasked["item-06"]["verdict"] == "no" and unasked["item-06"]["score"] == 0.0  # no explanation
    assert (folder / "prompt.txt").read_text() == JUDGE_PROMPTS["entailment"] + "\n"

    summary = json.loads((folder / "judge.json").read_text())
    assert summary["prompt_version"] == JUDGE_PROMPT_VERSION and summary["judge"] == "tiny_llava"
    assert summary["items"] == 10 and summary["asked"] == 8 and summary["new_items"] == 8
    assert summary["unparsed"] == sum(v["verdict"] is None for v in asked)
    assert sum(summary["verdicts"].values()) == sum(v["verdict"] is not None for v in verdicts)
    assert summary["items_per_s"] > 0 and result["items_per_s"] == summary["items_per_s"]
    assert summary["all_judge_n"] == sum(v["score"] is not None for v in verdicts)

    # eval's metrics.json is left as it was; readers see the judge's numbers beside it
    assert json.loads((run / "metrics.json").read_text()) == {"accuracy": 0.7, "bleu4": 0.25, "notes": ["kept"]}
    metrics = RunDir(run).results()
    assert metrics["accuracy"] == 0.7 and metrics["bleu4"] == 0.25 and metrics["notes"] == ["kept"]
    assert metrics["judge_model"] == "tiny_llava" and metrics["judge_prompt_version"] == JUDGE_PROMPT_VERSION
    for key in ("judge_score", "judge_score_ci", "judge_n", "all_judge_score", "all_judge_n", "judge_unparsed"):
        assert key in metrics
    assert read_verdicts(run) == {v["id"]: v["score"] for v in verdicts}


def test_scored_verdicts(make_cfg, tmp_path):
    """stage.decode=score: every asked item gets the most likely of the four answers, and the score follows."""
    run = finished_run(tmp_path)
    (run / "metrics.json").unlink()  # a run never scored: the judge makes no metrics.json
    run_stage(judge_cfg(make_cfg, run, "stage.decode=score", "stage.judge_name=scored"))
    assert not (run / "metrics.json").exists()
    verdicts = lines(run / "judgements" / "scored" / "verdicts.jsonl")
    asked = [v for v in verdicts if "note" not in v]
    assert asked and all(v["verdict"] == max(v["probs"], key=v["probs"].get) for v in asked)
    assert all(sum(v["probs"].values()) == pytest.approx(1) for v in asked)
    summary = json.loads((run / "judgements" / "scored" / "judge.json").read_text())
    correct = [v["score"] for v in verdicts if v["correct"] and v["score"] is not None]
    assert summary["unparsed"] == 0 and summary["judge_score"] == pytest.approx(sum(correct) / len(correct))
    assert read_verdicts(run, "scored") == {v["id"]: v["score"] for v in verdicts}


def test_an_interrupted_judge_continues_with_the_rest(make_cfg, tmp_path, monkeypatch):
    from vlx.models import LlavaNextAdapter

    whole = finished_run(tmp_path / "whole")
    run_stage(judge_cfg(make_cfg, whole))
    parts = finished_run(tmp_path / "parts")
    real, asked, stopped = LlavaNextAdapter.generate, [], []

    def generate(self, prompts, *a, **kw):  # the first run is killed during its second batch
        if len(asked) == 3 and not stopped:
            stopped.append(True)
            raise KeyboardInterrupt
        asked.extend(kw["ids"])
        return real(self, prompts, *a, **kw)

    monkeypatch.setattr(LlavaNextAdapter, "generate", generate)
    # 3 answered, and the 2 items not put to the judge (no label, no explanation), which come with the first batch
    with pytest.raises(KeyboardInterrupt, match=r"interrupted after 5 of 10 items \(3 answered by the judge"):
        run_stage(judge_cfg(make_cfg, parts))
    first = list(asked)
    run_stage(judge_cfg(make_cfg, parts))
    assert len(first) == 3 and len(asked) == 8 and not set(first) & set(asked[3:])  # only the rest is judged
    path = Path("judgements") / "tiny_llava" / "verdicts.jsonl"
    assert (parts / path).read_text() == (whole / path).read_text()  # as if never interrupted


def test_refuses_to_continue_with_another_prompt_or_judge(make_cfg, tmp_path, monkeypatch):
    import vlx.stages.judge as stage

    run = finished_run(tmp_path)
    run_stage(judge_cfg(make_cfg, run))
    monkeypatch.setattr(stage, "JUDGE_PROMPT_VERSION", "evil-4level-v2")
    with pytest.raises(ConfigError, match=r"prompt version 'evil-4level-v1'.*'evil-4level-v2'.*stage.judge_name"):
        run_stage(judge_cfg(make_cfg, run))
    monkeypatch.undo()
    other = judge_cfg(make_cfg, run, "judge_model=tiny_paligemma", "stage.judge_name=tiny_llava")
    with pytest.raises(ConfigError, match=r"other settings.*judge_model.checkpoint: '\S+llava_next' \(saved\)"):
        run_stage(other)
    with pytest.raises(ConfigError, match=r"max_new_tokens: 20 \(saved\) vs 5 \(now\)"):
        run_stage(judge_cfg(make_cfg, run, "stage.max_new_tokens=5"))
    run_stage(judge_cfg(make_cfg, run, "batch_size=1"))  # how items are batched changes no verdict
    rows = lines(run / "predictions.jsonl")
    rows[2]["explanation"] = "Another explanation."  # the run's predictions changed since they were judged
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConfigError, match=r"judged predictions that are no longer the run's \(1 items: item-02\)"):
        run_stage(judge_cfg(make_cfg, run))


def hydra_refusal(make_cfg, run: Path, *args: str) -> str:
    """The one line vlx says for what Hydra refuses to compose (an option or a key the judge's model lacks)."""
    with pytest.raises(Exception) as caught:  # noqa: PT011 - Hydra's own exception, whichever it raises
        judge_cfg(make_cfg, run, *args)
    line = config_mistake(
        caught.value, Path(CONFIG_DIR), ["stage=judge", f"stage.run={run}", "judge_model=tiny_llava", *args]
    )  # as judge_cfg gives them
    assert line is not None, caught.value
    return line


def test_mistakes_are_named_before_the_judge_loads(make_cfg, tmp_path, no_model_loads):
    run = finished_run(tmp_path)
    # the judge's model is the judge_model group: Hydra finds an option or a key it lacks, vlx says it in one line
    assert re.match(
        r"judge_model=tiny_lava: no such option \(did you mean tiny_llava",
        hydra_refusal(make_cfg, run, "judge_model=tiny_lava"),
    )
    with pytest.raises(ConfigError, match=r"needs judge_model=<model>"):
        run_stage(make_cfg("stage=judge", f"stage.run={run}"))
    assert re.match(
        r"judge_model.chekpoint=/x: .*did you mean judge_model.checkpoint",
        hydra_refusal(make_cfg, run, "judge_model.chekpoint=/x"),
    )
    with pytest.raises(
        ConfigError,
        match=r"judge_model=tiny_llava: model.checkpoint='/nowhere': no such folder.*"
        r"judge_model.<key>",
    ):
        run_stage(judge_cfg(make_cfg, run, "judge_model.checkpoint=/nowhere"))
    assert not (run / "judgements").exists()  # nothing written that the right judge could not continue
    with pytest.raises(ConfigError, match=r"judge_model=hf: judge_model.checkpoint is not set"):
        run_stage(judge_cfg(make_cfg, run, "judge_model=hf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no predictions.jsonl there"):
        run_stage(judge_cfg(make_cfg, tmp_path / "empty"))
    rows = lines(run / "predictions.jsonl")
    (run / "predictions.jsonl").write_text("".join(json.dumps({**r, "explanation": ""}) + "\n" for r in rows))
    with pytest.raises(ConfigError, match="none of its 10 predictions has an explanation"):
        run_stage(judge_cfg(make_cfg, run))


def test_judge_model_keys_are_the_judges_yaml(make_cfg, tmp_path):
    from vlx.stages.judge import judge_model, judge_option

    # keys of the judge's YAML are set as a command line gives them, with no `+` and no rewriting
    overrides = ["judge_model=llava", "judge_model.checkpoint=/models/llava", "judge_model.max_tiles=1"]
    cfg = judge_cfg(make_cfg, tmp_path, *overrides)
    assert judge_option(cfg) == "llava"
    node = judge_model(cfg)
    assert (node.checkpoint, node.max_tiles, node._target_) == ("/models/llava", 1, "vlx.models.load_adapter")
    assert not node.trust_remote_code  # only when the config asks
    assert judge_model(judge_cfg(make_cfg, tmp_path)).checkpoint.endswith("tiny-models/llava_next")


def test_verdicts_go_to_wandb_beside_the_predictions(make_cfg, tmp_path):
    run = finished_run(tmp_path)
    out = tmp_path / "judge-run"
    run_stage(judge_cfg(make_cfg, run, "logger=wandb", "stage.decode=score", out=out))
    (folder,) = (out / "wandb").glob("offline-run-*")
    summary = wandb_run(folder)["summary"]
    judged = json.loads((run / "judgements" / "tiny_llava" / "judge.json").read_text())
    assert summary["judge_score"] == pytest.approx(judged["judge_score"]) and summary["items"] == 10
    (table,) = (folder / "files" / "media" / "table").glob("judge_verdicts_*.table.json")
    data = json.loads(table.read_text())
    assert data["columns"] == ["id", "text", "gold", "pred", "explanation", "verdict", "judge_score", "judge_raw"]
    assert [row[0] for row in data["data"]] == [f"item-{i:02d}" for i in range(10)]
    assert data["data"][0][1] == "There is a red circle." and data["data"][0][2] == "entailment"


@pytest.mark.slow  # two `vlx` processes: 20 s on a busy 2-core machine
def test_the_command_line(tmp_path):
    """`vlx stage=judge ...` as a user types it: the judge's YAML keys set without Hydra's `+`, a typo in one line."""
    from helpers import run_vlx

    run = finished_run(tmp_path)
    args = [
        "stage=judge",
        f"stage.run={run}",
        "judge_model=tiny_llava",
        "judge_model.dtype=float32",
        "eval.resamples=0",
        f"hydra.run.dir={tmp_path / 'judge-run'}",
    ]
    done = run_vlx(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(lines(run / "judgements" / "tiny_llava" / "verdicts.jsonl")) == 10
    wrong = run_vlx(*args[:2], "judge_model=tiny_lava", f"hydra.run.dir={tmp_path / 'refused'}")
    said = wrong.stdout + wrong.stderr
    assert wrong.returncode == 2 and "judge_model=tiny_lava: no such option" in said and "Traceback" not in said
