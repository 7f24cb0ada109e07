"""faithfulness.json as readers show it: each test output's declared numbers with their intervals, and the settings
they were made with stated beside them (stage=report's tables, W&B's summary)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from vlx.faithfulness.catalog import DECLARED, declared_test

if TYPE_CHECKING:
    from vlx.run.directory import RunDir
    from vlx.tracking import Tracker

# a list setting (the candidate words) longer than this is shown as its length and its first words
SHOWN_LIST = 6


def ordered_outputs(names: Sequence[str] | set[str]) -> list[str]:
    """Output names in the declared tests' order (then names no declared test makes, sorted)."""
    order = {name: k for k, name in enumerate(DECLARED)}

    def key(output: str) -> tuple[int, str]:
        test = declared_test(output)
        return (order[test.name] if test else len(order), output)

    return sorted(names, key=key)


def measure_names(output: str, numbers: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, title) of an output's numbers: its test's declared measures present, or, for an undeclared test,
    every {"value", ...} entry under its own name."""
    test = declared_test(output)
    if test is not None:
        return [(m.name, m.title) for m in test.measures if m.name in numbers]
    return [(k, k) for k, v in numbers.items() if isinstance(v, Mapping) and "value" in v]


def setting_text(value: Any) -> str:
    """A setting's value on one line: a long list as its length and first items."""
    if isinstance(value, (list, tuple)):
        if len(value) > SHOWN_LIST:
            return f"{len(value)} ({', '.join(map(str, value[:3]))}, ...)"
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def settings_text(output: str, numbers: Mapping[str, Any]) -> str:
    """The settings an output's numbers were made with, as `key=value; ...` (its test's declared keys first), and
    the run's decoding."""
    settings = dict(numbers.get("settings") or {})
    test = declared_test(output)
    keys = [k for k in (test.settings if test else ()) if k in settings] + sorted(
        k for k in settings if not test or k not in test.settings
    )
    parts = [f"{k}={setting_text(settings[k])}" for k in keys]
    if numbers.get("decode"):
        parts.append(f"decode={numbers['decode']}")
    return "; ".join(parts)


def value_text(number: Mapping[str, Any] | None) -> str:
    """A number as `0.2500 [0.1000, 0.4000] n=24` (its interval where drawn, its denominator); empty for none."""
    if not isinstance(number, Mapping) or number.get("value") is None:
        return "" if not isinstance(number, Mapping) else f"undefined n={number.get('n')}"
    ci = number.get("ci")
    interval = f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""
    return f"{number['value']:.4f}{interval} n={number.get('n')}"


def numbers_of(results: Mapping[str, Mapping[str, Any]]) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    """(output, measure, number) of every output's numbers, outputs in the declared order."""
    for output in ordered_outputs(set(results)):
        numbers = results[output]
        for name, _ in measure_names(output, numbers):
            yield output, name, numbers[name]


def flat(results: Mapping[str, Mapping[str, Any]]) -> dict[str, float | int | None]:
    """Every output's numbers as `<output>.<measure>`, with `_ci_low`, `_ci_high` and `_n` (W&B's summary)."""
    out: dict[str, float | int | None] = {}
    for output, name, number in numbers_of(results):
        ci = number.get("ci") or [None, None]
        out[f"{output}.{name}"] = number.get("value")
        out[f"{output}.{name}_ci_low"], out[f"{output}.{name}_ci_high"] = ci[0], ci[1]
        out[f"{output}.{name}_n"] = number.get("n")
    return out


def long_rows(runs: Sequence[tuple[str, Mapping[str, Mapping[str, Any]]]]) -> list[list[Any]]:
    """One row per run, output and measure: [run, output, measure, value, ci_low, ci_high, n, settings]
    (`LONG_COLUMNS`)."""
    rows = []
    for run, results in runs:
        for output, name, number in numbers_of(results):
            ci = number.get("ci") or [None, None]
            settings = settings_text(output, results[output])
            rows.append([run, output, name, number.get("value"), ci[0], ci[1], number.get("n"), settings])
    return rows


LONG_COLUMNS = ("run", "test", "measure", "value", "ci_low", "ci_high", "n", "settings")


def markdown(runs: Sequence[tuple[str, Mapping[str, Mapping[str, Any]]]]) -> str:
    """The report's faithfulness section: a table per test output over the runs that ran it, each number with its
    interval and count, and the settings it was made with; empty where no run has faithfulness numbers."""
    outputs = ordered_outputs({o for _, results in runs for o in results})
    if not outputs:
        return ""
    lines = ["## Faithfulness (stage=faithfulness; 95% bootstrap intervals over items, n: the denominator)", ""]
    for output in outputs:
        test = declared_test(output)
        have = [(run, results[output]) for run, results in runs if output in results]
        names: dict[str, str] = {}
        for _, numbers in have:
            names.update(dict(measure_names(output, numbers)))
        lines += [f"### {output}" + (f" ({test.title})" if test else ""), ""]
        lines += ["| Run | " + " | ".join(names.values()) + " | Settings |", "|---|" + "---|" * (len(names) + 1)]
        for run, numbers in have:
            cells = [value_text(numbers.get(name)) for name in names]
            lines.append(f"| {run} | " + " | ".join(cells) + f" | {settings_text(output, numbers)} |")
        lower = [names[m] for m in (test.lower_is_better() if test else []) if m in names]
        if lower:
            lines += ["", f"Lower is better for {', '.join(lower)}."]
        lines.append("")
    return "\n".join(lines)


def log_to_tracker(
    tracker: Tracker, run: RunDir, results: Mapping[str, Mapping[str, Any]], outputs: Sequence[str]
) -> None:
    """W&B: every output's numbers in the summary (`flat`), and a table of each of `outputs`' rows
    (`faithfulness_<output>`, one row per edit or ablated item, the rows' own fields as columns)."""
    tracker.log_summary(flat(results))
    for output in outputs:
        rows = run.faithfulness_rows(output)
        columns = list(dict.fromkeys(k for r in rows for k in r))
        tracker.log_table(f"faithfulness_{output}", columns, [[r.get(c) for c in columns] for r in rows])
