"""The `vlx` command as a user runs it: in a subprocess, through Hydra's real entrypoint."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, SHARED_ESNLI
from helpers import cli_env, esnli_from_shared, meme_items, model_options, one_error_line, write_memes
from helpers import run_vlx as vlx


def test_cfg_job_prints_the_composed_config():
    res = vlx("model=llava", "task=meme", "shots=0", "--cfg", "job")
    assert res.returncode == 0, res.stderr
    assert "checkpoint: llava-hf/llava-v1.6-mistral-7b-hf" in res.stdout
    assert "_target_: vlx.tasks.HatefulMemesTask" in res.stdout
    assert "Is this image offensive?" in res.stdout


def test_unknown_choice_lists_the_options():
    res = vlx("model=gpt5", "--cfg", "job")
    assert res.returncode == 2
    assert res.stderr.strip() == (f"vlx: error: model=gpt5: no such option; choose one of {', '.join(model_options())}")


def test_missing_data_is_one_clear_message(tmp_path):
    res = vlx(
        "model=tiny_llava", "task=esnli", f"task.csv_dir={tmp_path / 'absent'}", f"hydra.run.dir={tmp_path / 'r'}"
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr + res.stdout
    assert f"{tmp_path / 'absent' / 'esnlive_test.csv'} not found" in res.stderr + res.stdout
    assert "Set task.csv_dir" in res.stderr + res.stdout
    assert not (tmp_path / "r").exists()  # a refused run leaves no directory of its own


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["task=esnli", "task.csv_dir={tmp}/absent"], "esnlive_test.csv not found"),
        (
            ["task=esnli", f"task.csv_dir={SHARED_ESNLI}", "task.image_dir={tmp}/absent"],
            "task.image_dir='{tmp}/absent': no such folder",
        ),
        (["stage=eval", "stage.run={tmp}/absent"], "stage.run='{tmp}/absent': no such directory"),
        (["stage.resume={tmp}/absent"], "stage.resume='{tmp}/absent': no such directory"),
        (["stage=compare", "stage.runs=[{tmp}/absent,{tmp}/absent]"], "stage.runs='{tmp}/absent': no such directory"),
    ],
)
def test_missing_paths_are_refused_before_torch_is_imported(tmp_path, args, message):
    """What a missing folder needs no torch, transformers or datasets to say (seconds to import, tens of seconds on a
    loaded machine); Python's own import log shows they were never imported."""
    if "esnlive" in str(args) and not SHARED_ESNLI.is_dir():
        pytest.skip("../shared/data/esnlive is not beside the repo")
    args = [a.format(tmp=tmp_path) for a in args]
    res = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "vlx",
            "model=tiny_llava",
            *args,
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
    )
    assert res.returncode == 2, res.stderr[-3000:]
    output = res.stdout + res.stderr
    errors = [line for line in output.splitlines() if "[ERROR]" in line or line.startswith("vlx: error:")]
    assert len(errors) == 1 and message.format(tmp=tmp_path) in errors[0], res.stderr[-3000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert "hydra" in imported and not imported & {"torch", "transformers", "datasets"}
    assert not (tmp_path / "run").exists()


def test_esnli_test_split_limit_30_from_the_command_line(tmp_path):
    """The issue's acceptance command: 30 predictions whose ids are the CSV's pairIDs, and Hydra's config saved."""
    if not SHARED_ESNLI.is_dir():
        pytest.skip("../shared/data/esnlive is not beside the repo")
    csv_dir, image_dir, rows = esnli_from_shared(SHARED_ESNLI / "esnlive_test.csv", tmp_path / "data", limit=30)
    out = tmp_path / "run"
    res = vlx(
        "model=tiny_llava",
        "task=esnli",
        f"task.csv_dir={csv_dir}",
        f"task.image_dir={image_dir}",
        "task.split=test",
        "task.limit=30",
        f"hydra.run.dir={out}",
        "batch_size=8",
        "eval_after_infer=false",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["id"] for p in preds] == [r["pairID"] for r in rows]
    assert (out / ".hydra" / "config.yaml").is_file() and (out / ".hydra" / "overrides.yaml").is_file()
    assert "done: 30 items" in (out / "vlx.log").read_text() or "done: 30 items" in res.stderr


@pytest.mark.slow
def test_four_combination_sweep(tmp_path):
    """Hydra's basic launcher: one run per combination of two models and two tasks, in one process."""
    write_memes(tmp_path / "data" / "hateful_memes", "dev_seen", meme_items(3))
    sweep = tmp_path / "sweep"
    res = vlx(
        "-m",
        "model=tiny_llava,tiny_paligemma",
        "task=shapes,meme",
        "task.limit=3",
        f"paths.data_dir={tmp_path / 'data'}",
        "generation.max_new_tokens=4",
        "eval_after_infer=false",
        f"hydra.sweep.dir={sweep}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    for job, (model, task) in enumerate(itertools.product(("tiny_llava", "tiny_paligemma"), ("shapes", "meme"))):
        assert len((sweep / str(job) / "predictions.jsonl").read_text().splitlines()) == 3
        overrides = (sweep / str(job) / ".hydra" / "overrides.yaml").read_text()
        assert f"model={model}" in overrides and f"task={task}" in overrides


def test_placeholder_script_makes_a_runnable_esnli_folder(tmp_path):
    if not SHARED_ESNLI.is_dir():
        pytest.skip("../shared/data/esnlive is not beside the repo")
    script = REPO / "scripts" / "placeholder_images.py"
    csv_path = SHARED_ESNLI / "esnlive_dev.csv"
    res = subprocess.run(
        [sys.executable, str(script), "esnli", str(csv_path), str(tmp_path), "--limit", "20"],
        capture_output=True,
        text=True,
        check=True,
    )
    made = sorted(p.name for p in tmp_path.iterdir())
    assert res.stdout.strip() == f"wrote {len(made)} placeholder images under {tmp_path}"
    from vlx.tasks import build_task

    task = build_task("esnli", csv_dir=SHARED_ESNLI, image_dir=tmp_path, split="dev", limit=20)
    assert len(task.load().examples) == 20  # every image of the first 20 rows is there and decodes


@pytest.mark.slow
def test_submitit_local_sweep_then_report(tmp_path):
    """A two-job sweep through submitit's local launcher (the cluster launcher's interface), one run per model and
    each scored, then the report of its runs (the basic launcher's sweeps: test_four_combination_sweep)."""
    sweep = tmp_path / "sweep"
    res = vlx(
        "-m",
        "hydra/launcher=local",
        "hydra.launcher.cpus_per_task=1",
        "model=tiny_llava,tiny_paligemma",
        "task=shapes",
        "task.limit=4",
        "generation.max_new_tokens=6",
        "eval.resamples=50",
        f"hydra.sweep.dir={sweep}",
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    submitted = list((sweep / ".submitit").glob("*/*_submitted.pkl"))  # the jobs went through submitit
    assert len(submitted) == 2 and all(p.name == f"{p.parent.name}_submitted.pkl" for p in submitted)
    assert sorted(p.name for p in (sweep / ".submitit").iterdir()) == sorted(p.parent.name for p in submitted)  # no %j
    for job, model in ((0, "tiny_llava"), (1, "tiny_paligemma")):
        assert len((sweep / str(job) / "predictions.jsonl").read_text().splitlines()) == 4
        assert f"model={model}" in (sweep / str(job) / ".hydra" / "overrides.yaml").read_text()
        assert (sweep / str(job) / "metrics.json").is_file()
    (sweep / "1" / "metrics.json").unlink()  # an unscored run is listed, not dropped
    res = vlx("stage=report", f"stage.sweep={sweep}", f"hydra.run.dir={tmp_path / 'report'}")
    assert res.returncode == 0, res.stderr[-3000:]
    table = (sweep / "results.md").read_text().splitlines()
    assert table[0].startswith("| Dataset | Split | Model | Shots | Fine-tuned | Quant | n | Accuracy")
    assert len(table) == 4 and "| shapes | test | tiny_llava | 0 | no | none | 4 |" in table[2]
    assert "tiny_paligemma" in table[3] and "missing metrics.json" in table[3]
    with (sweep / "results.csv").open() as f:
        assert len(f.read().splitlines()) == 3
    assert (sweep / "results_accuracy.png").is_file()


def test_a_new_stage_is_its_yaml_and_its_module(tmp_path):
    """Adding a stage touches two files, neither of them vlx's: a conf/stage YAML naming the module, and the module
    with its run(cfg); `hydra.searchpath` finds the YAML, the Python path the module. It runs with vlx's config,
    checks and run directory like any stage, and reads the prediction engine's public pieces (here, the task)."""
    (tmp_path / "conf" / "stage").mkdir(parents=True)
    (tmp_path / "conf" / "stage" / "count_labels.yaml").write_text(
        "name: count_labels\nmodule: my_stages.count_labels\n"
        "# its own setting, read as stage.label\nlabel: entailment\n"
    )
    (tmp_path / "my_stages").mkdir()
    (tmp_path / "my_stages" / "__init__.py").write_text("")
    (tmp_path / "my_stages" / "count_labels.py").write_text(
        "import json\n"
        "from pathlib import Path\n"
        "from hydra.utils import instantiate\n\n\n"
        "def run(cfg):\n"
        "    items = instantiate(cfg.task).load().examples\n"
        "    found = {'items': len(items), 'with_label': sum(ex.label == cfg.stage.label for ex in items)}\n"
        "    Path(cfg.paths.output_dir, 'counts.json').write_text(json.dumps(found))\n"
        "    return found\n"
    )
    out = tmp_path / "run"
    env = cli_env(PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]))
    res = vlx(
        "stage=count_labels",
        "task=shapes",
        "task.limit=12",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        f"hydra.run.dir={out}",
        env=env,
    )
    assert res.returncode == 0, res.stderr
    counts = json.loads((out / "counts.json").read_text())
    assert counts["items"] == 12 and 0 < counts["with_label"] < 12, counts
    # a YAML that names no module is one line, naming the file to mend
    (tmp_path / "conf" / "stage" / "broken.yaml").write_text("name: broken\n")
    res = vlx(
        "stage=broken", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", f"hydra.run.dir={tmp_path / 'b'}", env=env
    )
    assert res.returncode != 0 and "conf/stage/broken.yaml) names no module" in one_error_line(res)
