"""Parquet result files: the same rows and atomicity as CSV/JSONL, read back for --resume."""

import pytest

from iqart.engine.results.formats import open_result_writer, read_result_file

pytest.importorskip(
    "pyarrow", reason="Parquet output needs pyarrow, which comes with the ray extra: pip install -e '.[ray]'"
)

ROWS = [
    {"path": "a.png", "reference": "ra.png", "score": 0.25, "error": None},
    {"path": "b.png", "reference": "rb.png", "score": None, "error": "not a recognised image format"},
]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl", ".csv"])
def test_rows_read_back_as_written_in_every_format(tmp_path, suffix):
    out = tmp_path / f"scores{suffix}"
    with open_result_writer(out, ["path", "reference", "score", "error"]) as writer:
        for row in ROWS:
            writer.write(row)
    assert read_result_file(out) == ROWS


def test_a_failed_run_leaves_the_earlier_parquet_file_and_no_temporary(tmp_path):
    out = tmp_path / "scores.parquet"
    with open_result_writer(out, ["path", "score", "error"]) as writer:
        writer.write({"path": "a.png", "score": 0.5, "error": None})
    with pytest.raises(RuntimeError), open_result_writer(out, ["path", "score", "error"]) as writer:
        writer.write({"path": "b.png", "score": 0.75, "error": None})
        raise RuntimeError("stopped")
    assert read_result_file(out) == [{"path": "a.png", "score": 0.5, "error": None, "reference": None}]
    assert [p.name for p in tmp_path.iterdir()] == ["scores.parquet"]


def test_a_file_that_is_not_parquet_is_named(tmp_path):
    (tmp_path / "scores.parquet").write_text("path,score\n")
    with pytest.raises(ValueError, match="scores.parquet: not a Parquet result file"):
        read_result_file(tmp_path / "scores.parquet")
