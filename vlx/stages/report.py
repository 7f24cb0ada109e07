"""The report stage: every run of a sweep in one table (markdown + CSV), with a bar chart per metric.

    vlx stage=report sweep=multirun/2026-11-30/12-00-00
    vlx stage=report 'runs=[outputs/2026-11-30/12-00-00,outputs/2026-11-30/13-00-00]'
    vlx stage=report sweep=multirun/... stage.baseline=outputs/zero-shot     # every run tested against a baseline

A run without metrics.json is listed with its status, never dropped: a sweep job that failed (its error.json) as
`failed (<its overrides>): <error>`, one that a vlx run is still writing as such. With `stage.baseline`, every scored
run is compared with the baseline run on their shared items (`stage=compare`'s paired tests): the table gets a column
per `stage.baseline_metrics` entry with the difference, its interval and p-value, and each comparison's files go to
comparisons/<run>.{json,md,png}.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vlx.errors import ConfigError, DataError
from vlx.run.directory import RunDir
from vlx.run.lock import writer
from vlx.run.sweeps import distinguishing_overrides, read_error_record, sweep_jobs
from vlx.stages._common import resolved_config, run_dir
from vlx.tracking import tracking

log = logging.getLogger(__name__)

# (column title, where the value comes from): run.* from summary.json's run block, the rest from metrics.json
COLUMNS = [
    ("Dataset", "run.task"),
    ("Split", "run.split"),
    ("Model", "run.model"),
    ("Shots", "run.shots"),
    ("Fine-tuned", "run.adapter"),
    ("Quant", "run.quant"),
    ("n", "n"),
    ("Accuracy", "accuracy"),
    ("Macro-F1", "macro_f1"),
    ("AUROC", "auroc"),
    ("Binary F1", "binary_f1"),
    ("BLEU-4", "bleu4"),
    ("METEOR", "meteor"),
    ("ROUGE-L", "rouge_l"),
    ("CIDEr", "cider"),
    ("BERTScore", "bertscore_f1"),
    ("e-ViL global", "evil_global"),
    ("e-ViL global (no SPICE)", "evil_global_no_spice"),
    ("ECE", "ece"),
    ("Brier", "brier"),
    ("Judge S_E", "judge_score"),
    ("Human S_E", "human_score"),
    ("Protocol", "protocol"),
    ("Unparsed", "unparsed_rate"),
    ("Status", "status"),
    ("Run", "dir"),
]


def sweep_runs(sweep: Path) -> list[Path]:
    """The job directories of a multirun folder, in job order (0, 1, ..., 10)."""
    if not sweep.is_dir():
        raise ConfigError(f"sweep={str(sweep)!r}: no such directory; pass a multirun/<date>/<time> folder")
    jobs = sweep_jobs(sweep)
    if not jobs:
        raise ConfigError(f"sweep={str(sweep)!r} holds no runs (no job folders with .hydra/ or summary.json)")
    return jobs


def collect(run: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """One table row: the run's identity and headline metrics, or its status when they are missing (`overrides`,
    those that set a sweep job apart, name a failed job in its status)."""
    row: dict[str, Any] = {"dir": str(run)}
    folder = RunDir(run)
    summary, metrics = folder.summary_file, folder.metrics_file
    if not run.is_dir():
        row["status"] = "no such directory"
        return row
    if (holder := writer(run)) is not None:  # half-written files: not read
        row["status"] = f"being written by another vlx run ({holder})"
        return row
    if (record := read_error_record(run)) is not None:
        setting = overrides if overrides is not None else record.get("overrides")  # runs=[<a job's folder>]
        row["status"] = f"failed ({' '.join(map(str, setting or []))}): {record['error']}".replace(" (): ", ": ")
        row["failed"] = True
        return row
    try:
        if (info := folder.run_info()) is not None:
            row.update({f"run.{k}": v for k, v in info.to_json().items()})
        if metrics.is_file():
            results = folder.results()  # metrics.json, and each judge's numbers (judge.<name>.<key>)
            for name, numbers in results.pop("judges", {}).items():
                row.update({f"judge.{name}.{k}": v for k, v in numbers.items()})
            row.update(results)
    except (ConfigError, DataError) as err:
        row["status"] = str(err)  # listed with its reason, not dropped
        return row
    if metrics.is_file():
        row["status"] = "ok"
    elif summary.is_file():
        row["status"] = "missing metrics.json (score it: vlx stage=eval run=<dir>)"
    else:
        row["status"] = "missing summary.json and metrics.json (the run did not finish)"
    row["run.adapter"] = "yes" if row.get("run.adapter") else ("no" if "run.task" in row else None)
    return row


def judge_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """A "Judge S_E (<name>)" column per judge, where a run was judged by several (one judge's score is the
    "Judge S_E" column)."""
    several = any(sum(k.startswith("judge.") and k.endswith(".judge_score") for k in r) > 1 for r in rows)
    if not several:
        return []
    names = sorted({k[len("judge.") : -len(".judge_score")] for r in rows for k in r
                    if k.startswith("judge.") and k.endswith(".judge_score")})  # fmt: skip
    return [(f"Judge S_E ({name})", f"judge.{name}.judge_score") for name in names]


def cell(value: Any) -> str:
    if value is None:
        return ""
    # a failed job's error may hold a `|` or a line break, which would cut the markdown row
    return f"{value:.4f}" if isinstance(value, float) else " ".join(str(value).split()).replace("|", "\\|")


def write_tables(
    rows: list[dict[str, Any]], out: Path, extra: list[tuple[str, str]] | None = None
) -> tuple[Path, Path]:
    """results.md and results.csv in `out` (COLUMNS, then `extra` (title, key) columns before Status); columns that
    are empty in every row are left out."""
    every = COLUMNS[:-2] + (extra or []) + COLUMNS[-2:]
    columns = [(title, key) for title, key in every if any(r.get(key) is not None for r in rows)]
    md = out / "results.md"
    lines = ["| " + " | ".join(t for t, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(k)) for _, k in columns) + " |" for r in rows]
    md.write_text("\n".join(lines) + "\n")
    csv_path = out / "results.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([t for t, _ in columns])
        writer.writerows([[r.get(k) for _, k in columns] for r in rows])
    return md, csv_path


def plot_metric(rows: list[dict[str, Any]], metric: str, out: Path) -> Path | None:
    """A bar chart of one metric over the runs that have it (with CIs as error bars where computed)."""
    have = [r for r in rows if isinstance(r.get(metric), (int, float))]
    if not have:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f"{r.get('run.task')}/{r.get('run.model')}/k={r.get('run.shots')}" for r in have]
    values = [r[metric] for r in have]
    errors = None
    if all(r.get(f"{metric}_ci") for r in have):
        errors = [[v - r[f"{metric}_ci"][0] for v, r in zip(values, have, strict=True)],
                  [r[f"{metric}_ci"][1] - v for v, r in zip(values, have, strict=True)]]  # fmt: skip
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(have) + 2), 3.5))
    ax.bar(range(len(have)), values, yerr=errors, capsize=3, color="#4c72b0")
    ax.set_xticks(range(len(have)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    fig.tight_layout()
    path = out / f"results_{metric}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def against_baseline(rows: list[dict[str, Any]], baseline: Path, metrics: list[str], settings: dict[str, Any],
                     out: Path) -> list[str]:  # fmt: skip
    """Compares every scored run with the baseline; adds a "vs baseline" cell per metric to its row.

    Returns:
        The column keys added.
    """
    from vlx.stages.compare import compare_runs, write

    keys = [f"vs_baseline.{m}" for m in metrics]
    for row in rows:
        if row["status"] != "ok" or Path(row["dir"]).resolve() == baseline.resolve():
            continue
        result = compare_runs(baseline, Path(row["dir"]), settings)
        write(result, out / "comparisons", stem=Path(row["dir"]).name)
        for metric, key in zip(metrics, keys, strict=True):
            m = result["metrics"].get(metric) or result["metrics"].get(metric + "_no_spice")
            if m is not None:
                ci = f" [{m['ci'][0]:+.4f}, {m['ci'][1]:+.4f}]" if m["ci"] else ""
                p = f" p={m['p_value']:.3g}" if m["p_value"] is not None else ""
                row[key] = f"{m['difference']:+.4f}{ci}{p}"
    return keys


def run(cfg: DictConfig) -> dict[str, Any]:
    """Builds the table; returns {"runs": n, "complete": n with metrics, "failed": n sweep jobs that failed}."""
    if cfg.sweep:
        runs, out = sweep_runs(Path(cfg.sweep)), Path(cfg.sweep)
        overrides = distinguishing_overrides(runs)
    elif cfg.runs:
        runs, out = [Path(r) for r in cfg.runs], run_dir(cfg)
        overrides = {}
    else:
        raise ConfigError("stage=report needs sweep=<multirun dir> or runs=[<run dir>,...]")
    rows = [collect(r, overrides.get(r)) for r in runs]
    judges = judge_columns(rows)
    extra: list[str] = []
    if cfg.stage.get("baseline"):
        baseline = Path(cfg.stage.baseline)
        settings = OmegaConf.to_container(cfg.eval, resolve=True)
        extra = against_baseline(rows, baseline, list(cfg.stage.baseline_metrics), settings, out)
    md, csv_path = write_tables(rows, out, judges + [(f"{k.split('.', 1)[1]} vs baseline", k) for k in extra])
    plots = [p for m in cfg.stage.plots if (p := plot_metric(rows, m, out)) is not None]
    complete = sum(r["status"] == "ok" for r in rows)
    failed = sum(bool(r.get("failed")) for r in rows)
    log.info("report of %d runs (%d scored, %d failed) -> %s, %s, %d plots\n%s", len(rows), complete, failed, md,
             csv_path, len(plots), md.read_text())  # fmt: skip
    logger_cfg = OmegaConf.to_container(cfg.logger, resolve=True) if cfg.logger else None
    with tracking(logger_cfg, resolved_config(cfg), name=f"report-{out.name}") as tracker:
        every = COLUMNS + judges + [(f"{k.split('.', 1)[1]} vs baseline", k) for k in extra]
        tracker.log_table("results", [t for t, _ in every], [[r.get(k) for _, k in every] for r in rows])
    return {"runs": len(rows), "complete": complete, "failed": failed}
