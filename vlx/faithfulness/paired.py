"""Two runs' faithfulness numbers compared item by item (stage=compare): base and fine-tuned model on the same items
with the same changes (an item's edits and ablation images are drawn from the seed and its id), each declared
measure's difference B - A with a paired bootstrap interval and p-value (`vlx.metrics.paired.ratio_differences`).

Only like is paired with like: a test output both runs have, made with the same settings (the sample aside: the
pairing keeps the items both tested), on the items whose rows hold the same changes in both runs (`FaithfulnessTest.
change`). Anything left out is said in one line of the comparison's notes.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from vlx.faithfulness.catalog import declared_test
from vlx.faithfulness.measures import NEUTRAL_SETTINGS, item_counts
from vlx.faithfulness.results import ordered_outputs, settings_text
from vlx.metrics.bootstrap import resample_counts
from vlx.metrics.paired import Difference, ratio_differences
from vlx.run.directory import RunDir

log = logging.getLogger(__name__)


def settings_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The settings (all but `NEUTRAL_SETTINGS`) that differ between two outputs' numbers, as `key: a -> b`."""
    sa, sb = a.get("settings") or {}, b.get("settings") or {}
    keys = sorted((set(sa) | set(sb)) - set(NEUTRAL_SETTINGS))
    return [f"{k}: {sa.get(k)!r} -> {sb.get(k)!r}" for k in keys if sa.get(k) != sb.get(k)]


def paired_items(output: str, rows_a: list[dict], rows_b: list[dict]) -> tuple[list[str], int]:
    """The items both runs tested with the same changes (sorted), and how many shared items were left out because
    their changes differ."""
    test = declared_test(output)
    assert test is not None

    def changes(rows: list[dict]) -> dict[str, set]:
        out: dict[str, set] = {}
        for r in rows:
            out.setdefault(str(r["item"]), set()).add((str(r["id"]), repr(test.change(r))))
        return out

    ca, cb = changes(rows_a), changes(rows_b)
    shared = sorted(set(ca) & set(cb))
    same = [i for i in shared if ca[i] == cb[i]]
    return same, len(shared) - len(same)


def faithfulness_differences(
    run_a: RunDir, run_b: RunDir, resamples: int, seed: int, level: float
) -> tuple[dict[str, Difference], list[str], dict[str, Any]]:
    """Every declared measure of every test output both runs have, paired over the items both tested.

    Args:
        run_a: the baseline run.
        run_b: the other run (differences are B - A).
        resamples: bootstrap resamples (the eval group's).
        seed: the resamples' seed.
        level: the intervals' coverage.

    Returns:
        The differences by `<output>.<measure>`, the notes (one line per output not compared or items left out),
        and per output compared: the items paired and the settings.
    """
    res_a, res_b = run_a.faithfulness_results(), run_b.faithfulness_results()
    found: dict[str, Difference] = {}
    notes: list[str] = []
    info: dict[str, Any] = {}
    for output in ordered_outputs(set(res_a) | set(res_b)):
        if output not in res_a or output not in res_b:
            only = run_a if output in res_a else run_b
            notes.append(f"faithfulness {output} not compared: only {only} ran it (vlx stage=faithfulness)")
            continue
        test = declared_test(output)
        if test is None:
            notes.append(f"faithfulness {output} not compared: a test this vlx does not declare")
            continue
        differ = settings_differences(res_a[output], res_b[output])
        if differ:
            note = (
                f"faithfulness {output} not compared: the runs' settings differ (A -> B: {'; '.join(differ)}), so "
                f"their items were not changed alike; rerun one with the other's settings"
            )
            log.warning("%s", note)
            notes.append(note)
            continue
        rows_a, rows_b = run_a.faithfulness_rows(output), run_b.faithfulness_rows(output)
        items, changed = paired_items(output, rows_a, rows_b)
        if changed:
            note = f"faithfulness {output}: {changed} shared items left out, their changes differ between the runs"
            log.warning("%s", note)
            notes.append(note)
        if not items:
            notes.append(f"faithfulness {output} not compared: no item both runs tested alike")
            continue
        draws = resample_counts(len(items), resamples, seed)
        for measure in (m for m in test.measures if m.paired):
            per_a, per_b = item_counts(rows_a, measure), item_counts(rows_b, measure)
            result = ratio_differences(
                np.asarray([per_a[i] for i in items]), np.asarray([per_b[i] for i in items]), draws, level
            )
            if result is not None:
                found[f"{output}.{measure.name}"] = result
        info[output] = {"items": len(items), "settings": settings_text(output, res_b[output])}
    return found, notes, info


def lower_is_better(names: list[str] | dict[str, Any]) -> list[str]:
    """Those of `names` (`<output>.<measure>`) whose declared measure is lower-is-better."""
    out = []
    for name in names:
        output, _, measure = name.rpartition(".")
        test = declared_test(output) if output else None
        declared = test.measure(measure) if test else None
        if declared is not None and declared.higher_is_better is False:
            out.append(name)
    return out
