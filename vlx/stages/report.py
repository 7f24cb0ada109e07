"""The report stage: every run of a sweep in one table (markdown + CSV), with a bar chart per metric.

    vlx stage=report stage.sweep=multirun/2026-11-30/12-00-00
    vlx stage=report 'stage.runs=[outputs/2026-11-30/12-00-00,outputs/2026-11-30/13-00-00]'
    vlx stage=report stage.sweep=multirun/... stage.baseline=outputs/zero-shot     # every run tested against a baseline

A run without metrics.json is listed with its status, never dropped: a sweep job that failed (its error.json) as
`failed (<its overrides>): <error>`, one that a vlx run is still writing as such. With `stage.baseline`, every scored
run is compared with the baseline run on their shared items (`stage=compare`'s paired tests): the table gets a column
per `stage.baseline_metrics` entry with the difference, its interval and p-value, and each comparison's files go to
comparisons/<run>.{json,md,png}. The settings that differ across the runs (their manifest.json: model, weights,
dtype, prompt, decoding, versions, ...) go to settings.md, with the runs that have no manifest named.

Runs tested by stage=faithfulness get a section per test in results.md (each number with its interval, the test's
settings stated) and rows in faithfulness.csv.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vlx.config_data import plain_dict
from vlx.errors import ConfigError, DataError, writing
from vlx.faithfulness import results as faithfulness_results
from vlx.metrics.registry import NO_SPICE, REPORT, shown
from vlx.metrics.values import MetricValue, read_values
from vlx.run import manifest
from vlx.run.directory import RunDir
from vlx.run.lock import writer
from vlx.run.sweeps import distinguishing_overrides, read_error_record, sweep_jobs
from vlx.stages._common import resolved_config, run_dir
from vlx.tracking import tracking

log = logging.getLogger(__name__)

# (column title, where the value comes from): run.* from summary.json's run block; then the registry's report
# metrics (from metrics.json, `metric_columns`), then these
RUN_COLUMNS = [
    ("Dataset", "run.task"),
    ("Split", "run.split"),
    ("Model", "run.model"),
    ("Shots", "run.shots"),
    ("Fine-tuned", "run.adapter"),
    ("Quant", "run.quant"),
]
END_COLUMNS = [("Protocol", "protocol"), ("Status", "status"), ("Run", "dir")]


def metric_columns() -> list[tuple[str, str]]:
    """(title, metric) of every metric the registry shows in the report, in its order."""
    return [(m.title, m.name) for m in shown(REPORT)]


def columns(extra: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """Every column of the table: the run's identity, its metrics, `extra` (title, key), protocol, status, dir."""
    return RUN_COLUMNS + metric_columns() + (extra or []) + END_COLUMNS


def sweep_runs(sweep: Path) -> list[Path]:
    """The job directories of a multirun folder, in job order (0, 1, ..., 10)."""
    if not sweep.is_dir():
        raise ConfigError(f"stage.sweep={str(sweep)!r}: no such directory; pass a multirun/<date>/<time> folder")
    jobs = sweep_jobs(sweep)
    if not jobs:
        raise ConfigError(f"stage.sweep={str(sweep)!r} holds no runs (no job folders with .hydra/ or summary.json)")
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
        setting = overrides if overrides is not None else record.get("overrides")  # stage.runs=[<a job's folder>]
        row["status"] = f"failed ({' '.join(map(str, setting or []))}): {record['error']}".replace(" (): ", ": ")
        row["failed"] = True
        return row
    try:
        if (info := folder.run_info()) is not None:
            row.update({f"run.{k}": v for k, v in info.to_json().items()})
        row["faithfulness"] = folder.faithfulness_results()  # stage=faithfulness's numbers, scored or not
        if metrics.is_file():
            results = folder.results()  # metrics.json, and each judge's numbers (judge.<name>.<key>)
            results.pop("faithfulness", None)
            for name, numbers in results.pop("judges", {}).items():
                row.update({f"judge.{name}.{k}": v for k, v in numbers.items()})
            row.update(read_values(results))  # every declared metric: the columns pick the report's, plots any
            row["protocol"] = results.get("protocol")
    except (ConfigError, DataError) as err:
        row["status"] = str(err)  # listed with its reason, not dropped
        return row
    if metrics.is_file():
        row["status"] = "ok"
    elif summary.is_file():
        row["status"] = "missing metrics.json (score it: vlx stage=eval stage.run=<dir>)"
    else:
        row["status"] = "missing summary.json and metrics.json (the run did not finish)"
    row["run.adapter"] = "yes" if row.get("run.adapter") else ("no" if "run.task" in row else None)
    return row


def plain(value: Any) -> Any:
    """A cell's value for CSV and W&B: a metric's number, anything else as it is."""
    return value.value if isinstance(value, MetricValue) else value


def judge_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """A "Judge S_E (<name>)" column per judge, where a run was judged by several (one judge's score is the
    "Judge S_E" column)."""
    several = any(sum(k.startswith("judge.") and k.endswith(".judge_score") for k in r) > 1 for r in rows)
    if not several:
        return []
    names = sorted(
        {
            k[len("judge.") : -len(".judge_score")]
            for r in rows
            for k in r
            if k.startswith("judge.") and k.endswith(".judge_score")
        }
    )
    return [(f"Judge S_E ({name})", f"judge.{name}.judge_score") for name in names]


def cell(value: Any) -> str:
    """A cell of the markdown table: numbers to 4 decimals, text on one line with `|` escaped."""
    value = plain(value)
    if value is None:
        return ""
    # a failed job's error may hold a `|` or a line break, which would cut the markdown row
    return f"{value:.4f}" if isinstance(value, float) else " ".join(str(value).split()).replace("|", "\\|")


def write_tables(
    rows: list[dict[str, Any]], out: Path, extra: list[tuple[str, str]] | None = None
) -> tuple[Path, Path]:
    """results.md and results.csv in `out` (`columns`, with `extra` (title, key) columns before Protocol); columns
    that are empty in every row are left out."""
    shown_columns = [(title, key) for title, key in columns(extra) if any(plain(r.get(key)) is not None for r in rows)]
    md = out / "results.md"
    lines = ["| " + " | ".join(t for t, _ in shown_columns) + " |", "|" + "---|" * len(shown_columns)]
    lines += ["| " + " | ".join(cell(r.get(k)) for _, k in shown_columns) + " |" for r in rows]
    md.write_text("\n".join(lines) + "\n")
    csv_path = out / "results.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([t for t, _ in shown_columns])
        writer.writerows([[plain(r.get(k)) for _, k in shown_columns] for r in rows])
    return md, csv_path


def plot_metric(rows: list[dict[str, Any]], metric: str, out: Path) -> Path | None:
    """A bar chart of one metric over the runs that have it (with CIs as error bars where computed)."""
    have = [r[metric] for r in rows if isinstance(r.get(metric), MetricValue) and r[metric].value is not None]
    if not have:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [
        f"{r.get('run.task')}/{r.get('run.model')}/k={r.get('run.shots')}"
        for r in rows
        if isinstance(r.get(metric), MetricValue) and r[metric].value is not None
    ]
    values = [v.value for v in have]
    errors = None
    if all(v.interval for v in have):
        errors = [[v.value - v.interval[0] for v in have], [v.interval[1] - v.value for v in have]]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(have) + 2), 3.5))
    ax.bar(range(len(have)), values, yerr=errors, capsize=3, color="#4c72b0")
    ax.set_xticks(range(len(have)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    fig.tight_layout()
    path = out / f"results_{metric}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def against_baseline(
    rows: list[dict[str, Any]], baseline: Path, metrics: list[str], settings: dict[str, Any], out: Path
) -> list[str]:
    """Compares every scored run with the baseline; adds a "vs baseline" cell per metric to its row.

    Returns:
        The column keys added.
    """
    from vlx.metrics.paired import Difference
    from vlx.stages.compare import compare_runs, write

    keys = [f"vs_baseline.{m}" for m in metrics]
    for row in rows:
        if row["status"] != "ok" or Path(row["dir"]).resolve() == baseline.resolve():
            continue
        result = compare_runs(baseline, Path(row["dir"]), settings)
        write(result, out / "comparisons", stem=Path(row["dir"]).name)
        for metric, key in zip(metrics, keys, strict=True):
            found = result["metrics"].get(metric) or result["metrics"].get(metric + NO_SPICE)
            if found is not None:
                d = Difference.from_json(found)
                ci = f" [{d.ci[0]:+.4f}, {d.ci[1]:+.4f}]" if d.ci else ""
                p = f" p={d.p_value:.3g}" if d.p_value is not None else ""
                row[key] = f"{d.difference:+.4f}{ci}{p}"
    return keys


def write_faithfulness(rows: list[dict[str, Any]], md: Path, out: Path) -> list[list[Any]]:
    """The runs' faithfulness numbers: a section per test output appended to results.md (each number with its
    interval, the settings stated), and faithfulness.csv, one row per run, output and number; returns those rows
    ([] and no file where no run has faithfulness numbers)."""
    runs = [(str(r["dir"]), r["faithfulness"]) for r in rows if r.get("faithfulness")]
    if not runs:
        return []
    with writing(md):
        md.write_text(md.read_text() + "\n" + faithfulness_results.markdown(runs))
    long = faithfulness_results.long_rows(runs)
    path = out / "faithfulness.csv"
    with path.open("w", newline="") as f:
        table = csv.writer(f)
        table.writerow(faithfulness_results.LONG_COLUMNS)
        table.writerows(long)
    return long


SETTINGS = "settings.md"  # beside results.md: the settings that differ across the runs of the table


def write_settings(out: Path, runs: list[Path]) -> Path | None:
    """settings.md: the settings that differ across the runs (their manifest.json), each run named by its folder
    (by its path where two folders share a name), and the runs without a manifest; None, and no file, when every
    run with a manifest was made with the same settings."""
    names = [r.name for r in runs]
    lines = manifest.spread_lines({(r.name if names.count(r.name) == 1 else str(r)): r for r in runs})
    if not lines:
        return None
    path = out / SETTINGS
    with writing(path):
        path.write_text("# Settings that differ (manifest.json)\n\n" + "".join(f"- {line}\n" for line in lines))
    return path


def run(cfg: DictConfig) -> dict[str, Any]:
    """Builds the table; returns {"runs": n, "complete": n with metrics, "failed": n sweep jobs that failed}."""
    stage = cfg.stage
    if stage.sweep:
        runs, out = sweep_runs(Path(stage.sweep)), Path(stage.sweep)
        overrides = distinguishing_overrides(runs)
    elif stage.runs:
        runs, out = [Path(r) for r in stage.runs], run_dir(cfg)
        overrides = {}
    else:
        raise ConfigError("stage=report needs stage.sweep=<multirun dir> or stage.runs=[<run dir>,...]")
    rows = [collect(r, overrides.get(r)) for r in runs]
    judges = judge_columns(rows)
    extra: list[str] = []
    if cfg.stage.get("baseline"):
        baseline = Path(cfg.stage.baseline)
        settings = plain_dict(cfg.eval, "eval")
        extra = against_baseline(rows, baseline, list(cfg.stage.baseline_metrics), settings, out)
    md, csv_path = write_tables(rows, out, judges + [(f"{k.split('.', 1)[1]} vs baseline", k) for k in extra])
    faithfulness = write_faithfulness(rows, md, out)
    settings_md = write_settings(out, runs)
    differ = "\n" + settings_md.read_text() if settings_md else ""
    plots = [p for m in cfg.stage.plots if (p := plot_metric(rows, m, out)) is not None]
    complete = sum(r["status"] == "ok" for r in rows)
    failed = sum(bool(r.get("failed")) for r in rows)
    log.info(
        "report of %d runs (%d scored, %d failed) -> %s, %s, %d plots\n%s",
        len(rows),
        complete,
        failed,
        md,
        csv_path,
        len(plots),
        md.read_text() + differ,
    )
    logger_cfg = plain_dict(cfg.logger, "logger") if cfg.logger else None
    with tracking(logger_cfg, resolved_config(cfg), name=f"report-{out.name}") as tracker:
        every = columns(judges + [(f"{k.split('.', 1)[1]} vs baseline", k) for k in extra])
        tracker.log_table("results", [t for t, _ in every], [[plain(r.get(k)) for _, k in every] for r in rows])
        if faithfulness:
            tracker.log_table("faithfulness", list(faithfulness_results.LONG_COLUMNS), faithfulness)
    return {"runs": len(rows), "complete": complete, "failed": failed}
