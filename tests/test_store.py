"""A JSON-lines store (`JsonlStore`: predictions, verdicts, per-item statistics) keeps every finished row, survives a
cut-off write, and names a bad line."""

from __future__ import annotations

import pytest

from vlx.errors import DataError
from vlx.run.store import JsonlStore, write_csv


def test_append_and_read_back_in_order(tmp_path):
    store = JsonlStore(tmp_path / "p.jsonl")
    assert store.rows() == [] and store.done_ids() == set()
    store.append([{"id": "a", "pred": "neutral"}, {"id": "b", "pred": None}])
    store.append([{"id": "c", "pred": "entailment", "raw": "Entailment — ü"}])
    assert [r["id"] for r in store.rows()] == ["a", "b", "c"]
    assert store.rows()[2]["raw"] == "Entailment — ü"
    assert store.done_ids() == {"a", "b", "c"}


def test_interrupted_last_line_is_dropped_and_file_repaired(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "ra')
    store = JsonlStore(path)
    with pytest.raises(DataError, match=r"p\.jsonl:3: not valid JSON"):  # reading alone repairs nothing
        store.rows()
    assert store.done_ids() == {"a", "b"}  # a run that continues drops the cut-off write
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'
    store.append([{"id": "c"}])
    assert [r["id"] for r in store.rows()] == ["a", "b", "c"]


def test_whole_last_row_without_newline_is_kept(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}')
    store = JsonlStore(path)
    assert store.done_ids() == {"a", "b"}
    store.append([{"id": "c"}])
    assert [r["id"] for r in store.rows()] == ["a", "b", "c"]


def test_bad_line_in_the_middle_is_named(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "c"}\n')
    with pytest.raises(DataError, match=r"p\.jsonl:2: not valid JSON"):
        JsonlStore(path).rows()
    path.write_text('{"id": "a"}\n["no", "id"]\n')
    with pytest.raises(DataError, match=r"p\.jsonl:2: each line must be a JSON object with an 'id'"):
        JsonlStore(path).rows()


def test_csv_has_exactly_the_given_columns(tmp_path):
    write_csv(
        tmp_path / "p.csv",
        [{"img_path": "x.png", "explanation": "e, with comma", "extra": 1}],
        ["img_path", "explanation"],
    )
    assert (tmp_path / "p.csv").read_text().splitlines() == ["img_path,explanation", 'x.png,"e, with comma"']


def test_rewrite_replaces_the_file_whole(tmp_path):
    store = JsonlStore(tmp_path / "p.jsonl")
    store.append([{"id": "b"}, {"id": "a"}])
    store.rewrite([{"id": "a"}, {"id": "b"}])
    assert [r["id"] for r in store.rows()] == ["a", "b"]
    assert not (tmp_path / "p.jsonl.tmp").exists()
