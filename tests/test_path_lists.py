"""Image lists (`--paths-from`): text files and CSV/Parquet columns, relative to the list."""

from pathlib import Path

import pytest

from iqart.engine.pipeline.path_lists import read_path_list


def test_text_list_skips_blanks_and_comments_and_resolves_against_its_folder(tmp_path):
    (tmp_path / "list.txt").write_text("# shots\na.png\n\n  sub/b.jpg  \n/abs/c.png\n")
    assert read_path_list(tmp_path / "list.txt") == [tmp_path / "a.png", tmp_path / "sub" / "b.jpg", Path("/abs/c.png")]


def test_csv_column_is_read_by_name_and_a_missing_column_is_named(tmp_path):
    (tmp_path / "list.csv").write_text("id,file\n1,x.png\n2,\n3,y.png\n")
    assert read_path_list(tmp_path / "list.csv", "file") == [tmp_path / "x.png", tmp_path / "y.png"]
    with pytest.raises(ValueError, match="no column 'path'.*id, file"):
        read_path_list(tmp_path / "list.csv")


def test_parquet_column_and_empty_lists(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="pyarrow comes with the ray extra: pip install -e '.[ray]'")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": ["p/1.png", None, "2.png"], "score": [1.0, 2.0, 3.0]}), tmp_path / "m.parquet")
    assert read_path_list(tmp_path / "m.parquet") == [tmp_path / "p" / "1.png", tmp_path / "2.png"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="lists no image paths"):
        read_path_list(tmp_path / "empty.txt")
