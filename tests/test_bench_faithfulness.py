"""scripts/bench_faithfulness.py stays runnable: on a few items it makes its infer run, times each faithfulness test
through the script's own code and prints its table, whose rows are the tests' own files."""

from __future__ import annotations

import importlib.util
import sys

from conftest import REPO


def load_bench():
    """The script as a module, its folder on sys.path (it imports bench_eval and bench_judge, as when run)."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        spec = importlib.util.spec_from_file_location("bench_faithfulness", REPO / "scripts" / "bench_faithfulness.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(REPO / "scripts"))


def test_the_faithfulness_benchmark_times_each_test_on_a_few_items(tmp_path, capsys):
    bench = load_bench()
    out = tmp_path / "bench"
    results = bench.main(
        ["--items", "5", "--sample", "4", "--batch-size", "4", "--max-new-tokens", "4", "--positions", "2", "--out",
         str(out)]
    )  # fmt: skip
    assert [r["test"] for r in results] == [name for name, _, _ in bench.TESTS]
    by_test = {r["test"]: r for r in results}
    # 4 of the 5 items (stage.sample); 2 places x 2 words per item for the edits; one ablated image per item for each
    # image test
    assert by_test["counterfactual"]["rows"] == 16 and by_test["counterfactual"]["items"] == 4
    assert all(by_test[name]["rows"] == 4 for name, output, _ in bench.TESTS if output.startswith("image"))
    assert all(r["seconds"] > 0 and r["rows_per_s"] == r["rows"] / r["seconds"] for r in results)
    assert (out / "run" / "faithfulness" / "counterfactual.jsonl").read_text().count("\n") == 16
    table = capsys.readouterr().out
    assert "| test | items | rows | seconds | rows/s |" in table and "| counterfactual | 4 | 16 |" in table
    assert "the infer run itself: 5 items at" in table
