"""The compare stage: is run B better than run A on the items both answered? Paired tests of every metric.

    vlx stage=compare 'stage.runs=[outputs/A,outputs/B]'          # A is the baseline; differences are B - A

Both runs must be scored (`stage=eval`) on the same task and split; the comparison uses the items whose id both
runs predicted, and says how many. An id pairs only the same item: where the two runs' rows for one id differ in
image, text or gold (e.g. table tasks with row-number ids over different files), the comparison is refused. For
every metric both runs have (accuracy, macro-F1, binary F1, AUROC, ECE, Brier, NLL, each explanation metric, the
judge score), the difference comes with a paired percentile bootstrap
interval and p-value: the same resampled items score both runs, so what the items have in common cancels out. The
p-value is two-sided, from the bootstrap distribution of the difference centred on the observed one:
(1 + #{|d* - d| >= |d|}) / (R + 1). Accuracy also gets McNemar's exact test (the binomial test on the items
exactly one run gets right). Explanation metrics are recomputed per resample as in `stage=eval` (e-ViL's scores
on each run's own correctly labelled items among those drawn), which needs both runs scored with the same protocol
and BERTScore model.

Each faithfulness test both runs ran (stage=faithfulness) is compared the same way on the items both tested with the
same changes: its declared numbers as `<test>.<number>` rows (`vlx.faithfulness.paired`); runs with faithfulness
numbers only (not scored) compare those alone.

Writes comparison.json, comparison.md and comparison.png (the differences with their intervals) into this run's
directory, and logs the table and the plot to W&B.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from vlx.config_data import plain_dict
from vlx.errors import ConfigError, writing
from vlx.faithfulness.paired import faithfulness_differences
from vlx.faithfulness.paired import lower_is_better as faithfulness_lower
from vlx.metrics.bootstrap import resample_counts
from vlx.metrics.paired import (
    METHOD,
    Difference,
    LabelledItems,
    classification_differences,
    explanation_differences,
    judge_differences,
    mcnemar,
    row_metric_differences,
)
from vlx.metrics.registry import COMPARE, NO_JAVA, in_table_order, lower_is_better
from vlx.run import manifest
from vlx.run.directory import RunDir
from vlx.run.lock import check_idle
from vlx.run.store import JsonlStore, describe_differences, item_differences, write_json
from vlx.stages._common import resolved_config, run_dir
from vlx.tasks.answers import DEFAULT_SCORING, Scoring, answer_score, counted_label, is_correct
from vlx.tracking import tracking

log = logging.getLogger(__name__)


def _load(run: Path) -> dict[str, Any]:
    """A scored run: its metrics.json, its predictions by id, and its explanation items by id.

    Raises:
        ConfigError: the run is not scored, or another vlx process is still writing it (its predictions or scores
            would be read half-written).
    """
    check_idle(run)
    folder = RunDir(run)
    scored = folder.metrics_file.is_file()
    if not scored and not folder.faithfulness_results_file.is_file():
        raise ConfigError(f"{run}: no metrics.json; score the run first: vlx stage=eval stage.run={run}")
    metrics = folder.results()
    if not scored:  # faithfulness numbers only: the task and split from the run's summary
        info = folder.run_info()
        metrics.update(task=info.task if info else None, split=info.split if info else None)
    rows = {r.id: r for r in folder.predictions("compare")}
    items_path = folder.explanation_items
    items = {str(r["id"]): r for r in JsonlStore(items_path).rows()} if items_path.is_file() else {}
    # the rule eval scored the answers by (VQA-X's soft score, ScienceQA's guesses); runs scored before the rule was
    # recorded used the defaults
    scoring = Scoring(**metrics["scoring"]) if metrics.get("scoring") else DEFAULT_SCORING
    return {"dir": run, "metrics": metrics, "rows": rows, "items": items, "scoring": scoring, "scored": scored}


def check_comparable(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Refuses runs of different tasks or splits, naming both."""
    for key in ("task", "split"):
        if a["metrics"].get(key) != b["metrics"].get(key):
            raise ConfigError(
                f"runs of different {key}s cannot be compared item by item: {a['dir']} has "
                f"{key}={a['metrics'].get(key)!r}, {b['dir']} has {key}={b['metrics'].get(key)!r}"
            )
    # the seed matters only to the guesses for unparsed answers
    rule_a, rule_b = (
        {**r["scoring"].record(), **({} if r["scoring"].unparsed == "guess" else {"seed": None})} for r in (a, b)
    )
    if rule_a != rule_b:
        fix = " ".join(f"eval.{k}={v}" for k, v in a["scoring"].record().items() if k != "seed")
        raise ConfigError(
            f"the runs' answers were scored by different rules ({a['scoring'].record()} in {a['dir']}, "
            f"{b['scoring'].record()} in {b['dir']}): rescore one, e.g. vlx stage=eval stage.run={b['dir']} {fix} "
            f"eval.seed={a['scoring'].seed}"
        )


def check_same_items(ids: list[str], a: dict[str, Any], b: dict[str, Any]) -> None:
    """Refuses to pair items that share an id but not their content (image, text, gold): e.g. two table-task runs
    whose ids are row numbers, made over different files. The differing items are counted and the first named."""
    found = item_differences((i, a["rows"][i], b["rows"][i]) for i in ids)
    if found:
        raise ConfigError(
            f"{a['dir']} and {b['dir']} hold different items under the same ids: of {len(ids)} shared ids, "
            f"{describe_differences(found)} differ in image, text or gold, so they cannot be paired. Compare runs "
            f"made over the same data (the same task files and split)"
        )


def labelled_items(run: dict[str, Any], ids: list[str]) -> LabelledItems:
    """A run's answers on the shared labelled items `ids`, as the paired tests take them."""
    rows = [run["rows"][i] for i in ids]
    return LabelledItems(
        np.asarray([answer_score(r, run["scoring"]) for r in rows]),
        [r.gold for r in rows],
        [counted_label(r, run["scoring"]) for r in rows],
        [r.scores for r in rows],
    )


def _classification(
    lab: list[str], a: dict[str, Any], b: dict[str, Any], resamples: int, seed: int, level: float
) -> tuple[dict[str, Difference], dict[str, Any] | None]:
    """The label metrics' differences on the shared labelled items `lab`, and McNemar's test."""
    if not lab:
        return {}, None
    items_a, items_b = labelled_items(a, lab), labelled_items(b, lab)
    labels = list(a["metrics"].get("confusion_matrix", {}).get("rows") or [])
    found = classification_differences(
        items_a,
        items_b,
        labels,
        _positive(a),
        resamples=resamples,
        seed=seed,
        level=level,
        bins=int(a["metrics"].get("ece_bins") or 15),
    )
    return found, mcnemar(items_a.score > 0, items_b.score > 0)


def _positive(run: dict[str, Any]) -> str | None:
    info = RunDir(run["dir"]).run_info()
    return None if info is None else info.positive


def check_same_explanation_scoring(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Refuses explanation scores of different protocols, scales or BERTScore models, saying how to rescore."""
    for key in ("protocol", "explanation_scale"):
        if a["metrics"].get(key) != b["metrics"].get(key):
            protocol = str(a["metrics"].get("protocol"))  # coco_no_java: eval.protocol=coco eval.java=false
            settings = f"eval.protocol={protocol.removesuffix(NO_JAVA)}" + (
                " eval.java=false" if protocol.endswith(NO_JAVA) else ""
            )
            raise ConfigError(
                f"the runs' explanations were scored differently ({key} {a['metrics'].get(key)!r} in "
                f"{a['dir']}, {b['metrics'].get(key)!r} in {b['dir']}): rescore one, e.g. vlx "
                f"stage=eval stage.run={b['dir']} {settings}"
            )
    model_a, model_b = (r["metrics"].get("bertscore", {}).get("model") for r in (a, b))
    if model_a != model_b:
        raise ConfigError(
            f"the runs' BERTScore models differ ({model_a} in {a['dir']}, {model_b} in {b['dir']}): "
            "rescore one with the other's eval/bertscore"
        )


def _explanations(
    ids: list[str], a: dict[str, Any], b: dict[str, Any], counts: np.ndarray, level: float
) -> dict[str, Difference]:
    """Every explanation metric of both runs on the shared scored items, resampled together."""
    from vlx.metrics.text import ExplanationItems

    shared = [i for i in ids if i in a["items"] and i in b["items"]]
    if not shared:
        return {}
    check_same_explanation_scoring(a, b)
    pos = np.searchsorted(np.asarray(ids), np.asarray(shared))
    weights = counts[:, pos] if len(shared) < len(ids) else counts
    spice = bool(a["metrics"].get("evil_spice")) and bool(b["metrics"].get("evil_spice"))
    items_a, items_b = (
        ExplanationItems.from_rows(r["metrics"]["protocol"], [r["items"][i] for i in shared], spice) for r in (a, b)
    )
    right_a, right_b = (np.asarray([bool(r["items"][i]["correct"]) for i in shared]) for r in (a, b))
    labelled = a["metrics"].get("n_explained_correct") is not None and a["metrics"].get("accuracy") is not None
    return explanation_differences(items_a, items_b, right_a, right_b, weights, labelled=labelled, level=level)


def _judge(
    ids: list[str],
    a: dict[str, Any],
    b: dict[str, Any],
    counts: np.ndarray,
    level: float,
    judge: str | None,
    notes: list[str],
) -> dict[str, Difference]:
    """The judge score (mean e-ViL verdict score) of both runs on the items both have verdicts for."""
    from vlx.judging.verdicts import judge_names, read_verdicts

    if not judge_names(a["dir"]) and not judge_names(b["dir"]):
        return {}
    try:
        va, vb = read_verdicts(a["dir"], judge), read_verdicts(b["dir"], judge)
    except ConfigError as err:  # one run judged, or several judges and none named
        notes.append(f"judge scores not compared: {err} (name the judge with stage.judge=<name>)")
        return {}
    right_a, right_b = (np.asarray([is_correct(r["rows"][i], scoring=r["scoring"]) for i in ids]) for r in (a, b))
    return judge_differences([va.get(i) for i in ids], [vb.get(i) for i in ids], right_a, right_b, counts, level)


def compare_runs(run_a: Path, run_b: Path, settings: dict[str, Any], judge: str | None = None) -> dict[str, Any]:
    """comparison.json's content for baseline run_a and run_b (differences are b - a); `judge` names the judge whose
    verdicts are compared where a run has several."""
    a, b = _load(run_a), _load(run_b)
    check_comparable(a, b)
    ids = sorted(set(a["rows"]) & set(b["rows"]))
    if not ids:
        raise ConfigError(f"{run_a} and {run_b} share no item id: nothing to compare")
    check_same_items(ids, a, b)
    resamples, level, seed = settings["resamples"], settings["level"], settings["seed"]
    counts = resample_counts(len(ids), resamples, seed)
    lab = [i for i in ids if a["rows"][i].gold is not None]
    notes: list[str] = []
    found: dict[str, Difference] = {}
    test = None
    if a["scored"] and b["scored"]:
        found, test = _classification(lab, a, b, resamples, seed, level)
        found.update(_explanations(ids, a, b, counts, level))
        found.update(_judge(ids, a, b, counts, level, judge, notes))
        found.update(row_metric_differences([a["rows"][i] for i in ids], [b["rows"][i] for i in ids], counts, level))
    else:
        unscored = a["dir"] if not a["scored"] else b["dir"]
        notes.append(f"labels and explanations not compared: {unscored} is not scored (vlx stage=eval stage.run=...)")
    faithfulness, faith_notes, faith_info = faithfulness_differences(
        RunDir(run_a), RunDir(run_b), resamples, seed, level
    )
    found.update(faithfulness)
    notes += faith_notes
    metrics = {k: d.to_json() for k, d in in_table_order(found, COMPARE).items()}
    return {
        "a": str(run_a),
        "b": str(run_b),
        "task": a["metrics"].get("task"),
        "split": a["metrics"].get("split"),
        "n_a": len(a["rows"]),
        "n_b": len(b["rows"]),
        "n_shared": len(ids),
        "protocol": a["metrics"].get("protocol"),
        "resamples": resamples,
        "level": level,
        "seed": seed,
        "method": METHOD,
        "metrics": metrics,
        "mcnemar": test,
        "notes": notes,
        "faithfulness": faith_info,
        "settings_differences": manifest.pair_lines(run_a, run_b),
    }


def markdown(result: dict[str, Any]) -> str:
    """comparison.md: one row per metric."""
    pct = f"{result['level']:.0%}"
    lines = [
        f"# {result['b']} vs {result['a']} (baseline)",
        "",
        f"{result['task']} {result['split'] or ''}: {result['n_shared']} shared items ({result['n_a']} in A, "
        f"{result['n_b']} in B); {result['resamples']} paired bootstrap resamples, seed {result['seed']}.",
        "",
        f"| metric | A | B | B - A | {pct} CI | p |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for key, m in result["metrics"].items():
        ci = f"[{m['ci'][0]:+.4f}, {m['ci'][1]:+.4f}]" if m["ci"] else ""
        p = f"{m['p_value']:.4f}" if m["p_value"] is not None else ""
        lines.append(f"| {key} | {m['a']:.4f} | {m['b']:.4f} | {m['difference']:+.4f} | {ci} | {p} |")
    if result["mcnemar"]:
        t = result["mcnemar"]
        lines += [
            "",
            f"McNemar's exact test (accuracy): {t['only_a_right']} items only A gets right, "
            f"{t['only_b_right']} only B; p = {t['p_value']:.4g}.",
        ]
    for output, info in result.get("faithfulness", {}).items():
        lines.append(f"- faithfulness {output}: {info['items']} items both runs tested alike; {info['settings']}")
    lines += [f"- {note}" for note in result.get("notes", [])]
    if lower := lower_is_better(result["metrics"]) + faithfulness_lower(result["metrics"]):
        lines += ["", f"Lower is better for {', '.join(lower)}."]
    if "settings_differences" in result:  # comparisons written before manifests have none
        found = result["settings_differences"]
        lines += ["", "## Settings that differ (manifest.json, A -> B)", ""]
        lines += [f"- {line}" for line in found] if found else ["The runs were made with the same settings."]
    return "\n".join(lines) + "\n"


# the x axis spans at least +-MIN_HALF_SPAN (a point of accuracy): a zero difference is a dot at 0, not float noise
# magnified to the whole width
MIN_HALF_SPAN = 0.01
TITLE_LABEL_CHARS = 60  # a run's label in the plot's title is cut to this many characters


def _overrides(run: Path) -> list[str]:
    """The command-line overrides the run was made with (Hydra's .hydra/overrides.yaml), Hydra's own left out."""
    path = RunDir(run).overrides_file
    if not path.is_file():
        return []
    import yaml

    try:
        listed = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return []
    return [str(o) for o in listed or [] if not str(o).lstrip("+~").startswith("hydra.")]


def _path_tails(run_a: Path, run_b: Path) -> tuple[str, str]:
    """The ends of the two paths that tell them apart; a sweep's job numbers (0, 1) keep their sweep folder."""
    parts_a, parts_b = Path(run_a).resolve().parts, Path(run_b).resolve().parts
    common = 0
    while common < min(len(parts_a), len(parts_b)) - 1 and parts_a[common] == parts_b[common]:
        common += 1
    tail_a, tail_b = parts_a[common:] or parts_a[-1:], parts_b[common:] or parts_b[-1:]
    if len(tail_a) == len(tail_b) == 1 and tail_a[0].isdigit() and tail_b[0].isdigit() and common:
        tail_a, tail_b = parts_a[common - 1 :], parts_b[common - 1 :]
    return "/".join(tail_a), "/".join(tail_b)


def _cut(text: str) -> str:
    return text if len(text) <= TITLE_LABEL_CHARS else text[: TITLE_LABEL_CHARS - 1] + "…"


def run_labels(run_a: Path, run_b: Path) -> tuple[str, str, str, str]:
    """Names of two runs for the plot's title: (label A, label B, folder A, folder B).

    A label is the overrides the run was made with that the other run lacks (`model=tiny_llava`, `shots=3`), so
    a sweep's jobs 0 and 1 are told apart by what was swept; where the overrides do not tell them apart (or were not
    recorded), the label is the end of the run's path that differs from the other's. The folders are those ends.
    """
    folder_a, folder_b = _path_tails(run_a, run_b)
    over_a, over_b = _overrides(run_a), _overrides(run_b)
    only_a = [o for o in over_a if o not in over_b]
    only_b = [o for o in over_b if o not in over_a]
    if not only_a and not only_b:
        return folder_a, folder_b, folder_a, folder_b
    return _cut(" ".join(only_a) or "defaults"), _cut(" ".join(only_b) or "defaults"), folder_a, folder_b


def x_limits(low: np.ndarray, high: np.ndarray) -> tuple[float, float]:
    """Symmetric x limits around 0 that hold every interval [low, high], with 10% room, at least +-MIN_HALF_SPAN."""
    reach = float(np.nanmax(np.abs(np.concatenate([low, high])))) if len(low) else 0.0
    half = max(reach * 1.1, MIN_HALF_SPAN) if math.isfinite(reach) else MIN_HALF_SPAN
    return -half, half


def figure(result: dict[str, Any]) -> Any | None:
    """The comparison plot as a matplotlib Figure (None when no metric has an interval): each metric's difference
    B - A with its interval, one row per metric, on an x axis symmetric around 0."""
    rows = [(k, m) for k, m in result["metrics"].items() if m["ci"]]
    if not rows:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 1.2 + 0.32 * len(rows)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    y = np.arange(len(rows))[::-1]
    diffs = np.asarray([m["difference"] for _, m in rows], dtype=float)
    ci_low = np.asarray([m["ci"][0] for _, m in rows], dtype=float)
    ci_high = np.asarray([m["ci"][1] for _, m in rows], dtype=float)
    # errorbar wants distances from the point; an interval a rounding error off the point must not go negative
    low, high = np.maximum(diffs - ci_low, 0), np.maximum(ci_high - diffs, 0)
    colors = [
        "#c44e52" if m["p_value"] is not None and m["p_value"] < 1 - result["level"] else "#4c72b0" for _, m in rows
    ]
    for row, diff, lo, hi, color in zip(y, diffs, low, high, colors, strict=True):  # errorbar takes one colour
        ax.errorbar(diff, row, xerr=[[lo], [hi]], fmt="o", color=color, capsize=3)
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set_xlim(*x_limits(np.minimum(ci_low, diffs), np.maximum(ci_high, diffs)))
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, symmetric=True))  # a few round ticks, 0 among them
    ax.set_yticks(y, labels=[k for k, _ in rows], fontsize=8)
    ax.set_xlabel(f"B - A ({result['level']:.0%} paired bootstrap interval; red: p < {1 - result['level']:.2g})")
    label_a, label_b, folder_a, folder_b = run_labels(Path(result["a"]), Path(result["b"]))
    where = "" if (label_a, label_b) == (folder_a, folder_b) else f"{folder_b} vs {folder_a}; "
    task = " ".join(str(v) for v in (result.get("task"), result.get("split")) if v)
    ax.set_title(
        f"B: {label_b}  vs  A: {label_a} (baseline)\n{where}{task}, {result['n_shared']} shared items", fontsize=9
    )
    return fig


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """Writes comparison.png (`figure`); None, and no file, when no metric has an interval."""
    fig = figure(result)
    if fig is None:
        return None
    with writing(path):
        fig.savefig(path, format="png", dpi=110)
    return path


def write(result: dict[str, Any], out: Path, stem: str = "comparison") -> tuple[Path, Path, Path | None]:
    """Writes `result` into the folder `out` as `<stem>.json`, `<stem>.md` and, where a metric has an interval to
    draw, `<stem>.png`; returns the three paths (the plot's None where none was drawn)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{stem}.json", result)
    with writing(out / f"{stem}.md"):
        (out / f"{stem}.md").write_text(markdown(result))
    return out / f"{stem}.json", out / f"{stem}.md", plot(result, out / f"{stem}.png")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Compares the two runs of `stage.runs` (baseline A, then B) on the items both hold, writes comparison.json,
    .md and .png into this run's directory, and returns the shared item count and each metric's difference B - A.

    Raises:
        ConfigError: `stage.runs` does not name exactly two runs, an `eval` setting breaks its rule, or the runs
            cannot be compared (not scored, of different tasks, splits or scoring rules, or items that differ).
    """
    runs = [Path(r) for r in (cfg.stage.runs or [])]
    if len(runs) != 2:
        raise ConfigError(f"stage=compare needs two runs, stage.runs=[<baseline A>,<run B>]; got {len(runs)}")
    settings = plain_dict(cfg.eval, "eval")
    from vlx.stages.evaluation import check_settings

    check_settings(settings)
    out = run_dir(cfg)
    result = compare_runs(runs[0], runs[1], settings, judge=cfg.stage.judge)
    json_path, md_path, png = write(result, out)
    log.info("comparison of %d shared items -> %s\n%s", result["n_shared"], json_path, md_path.read_text())
    logger_cfg = plain_dict(cfg.logger, "logger") if cfg.logger else None
    with tracking(logger_cfg, resolved_config(cfg), name=f"compare-{out.name}") as tracker:
        columns = ["metric", "a", "b", "difference", "ci_low", "ci_high", "p_value", "n"]
        tracker.log_table(
            "comparison",
            columns,
            [
                [k, m["a"], m["b"], m["difference"], *(m["ci"] or [None, None]), m["p_value"], m["n"]]
                for k, m in result["metrics"].items()
            ],
        )
        if png is not None:
            tracker.log_image("comparison_plot", png)
    flat = {f"{k}_difference": m["difference"] for k, m in result["metrics"].items()}
    return {"n_shared": result["n_shared"], **flat}
