"""The `iqart` command line itself: --version, help on every subcommand and option, score's
option groups, exit codes (2 for the user's mistakes, 70 with a traceback for iqart's), named
paths checked before any work, and JSONL lines that stay lines."""

import argparse
import importlib.metadata
import json
import shutil

import pytest

from iqart.engine.cli import exits
from iqart.engine.cli.main import build_parser, main
from iqart.engine.results.text_writers import AtomicResultWriter, read_results
from iqart.engine.scorer import BACKENDS
from tests.helpers import EXAMPLE_IMAGES

MODEL = "qualiclip-tiny"
SEPARATORS = "\u2028\u2029\x85"  # line breaks str.splitlines() splits on and json.dumps leaves raw


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices


def test_version_is_the_installed_distributions(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip() == f"iqart {importlib.metadata.version('iqart')}"


def test_every_subcommand_has_a_description_and_every_option_help():
    parsers = {"iqart": build_parser(), **subcommands()}
    assert {
        "score",
        "list",
        "report",
        "export",
        "validate",
        "build",
        "quantize",
        "bench",
        "degrade",
        "train",
        "eval",
    } <= parsers.keys()
    missing = []
    for name, parser in parsers.items():
        if not parser.description:
            missing.append(f"{name}: description")
        missing += [f"{name}: {'/'.join(a.option_strings) or a.dest}" for a in parser._actions if not a.help]
    assert missing == []


def test_score_options_come_in_groups_and_its_help_names_every_format():
    score = subcommands()["score"]
    groups = {group.title: [a.dest for a in group._group_actions] for group in score._action_groups}
    assert {"paths", "ref", "pairs", "paths_from"} <= set(groups["inputs"])
    assert {"model", "weights", "backend", "device", "precision", "batch_size"} <= set(groups["model and backend"])
    assert {"decode", "decode_device", "decode_timeout", "workers"} <= set(groups["decoding"])
    assert {"out", "resume"} <= set(groups["output"])
    assert {"ray", "ray_actors"} <= set(groups["distributed"])
    assert groups["options"] == ["help"]  # nothing left outside a group
    text = " ".join(score.format_help().split())
    assert "CSV, JSONL or Parquet" in text
    for title in ("inputs:", "model and backend:", "decoding:", "output:", "distributed:"):
        assert title in text


def test_backend_choices_are_the_scorers_table():
    (backend,) = [a for a in subcommands()["score"]._actions if a.dest == "backend"]
    assert tuple(backend.choices) == BACKENDS and all(name in backend.help for name in BACKENDS)


def test_top_level_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "exit codes:" in out
    for code in (exits.OK, exits.FAILED, exits.USAGE, exits.SOFTWARE):
        assert f"\n  {code} " in out
    assert exits.SOFTWARE == 70 and "128+N" in out


def test_a_bug_prints_its_traceback_and_exits_70(monkeypatch, capsys):
    def broken(card):
        raise ValueError("a bug, not the user's mistake")

    monkeypatch.setattr("iqart.engine.cli.models.describe", broken)
    assert main(["list"]) == exits.SOFTWARE == 70
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ValueError: a bug, not the user's mistake" in err
    assert "internal error" in err


def test_an_os_error_about_no_named_path_is_a_bug_too(monkeypatch, capsys, tmp_path):
    def broken(card):
        with open(tmp_path / "internal" / "file"):
            pass

    monkeypatch.setattr("iqart.engine.cli.models.describe", broken)
    assert main(["list"]) == 70
    assert "FileNotFoundError" in capsys.readouterr().err


def test_a_scorer_argument_check_is_a_usage_error_without_traceback(weights, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IQART_HOME", str(tmp_path / "home"))
    out = tmp_path / "s.csv"
    code = main(
        [
            "score",
            str(EXAMPLE_IMAGES / "chelsea.png"),
            "-m",
            MODEL,
            "-w",
            str(weights(MODEL)),
            "--backend",
            "torch",
            "--precision",
            "int8",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "the torch backend runs fp32, fp16, bf16, not 'int8'" in err
    assert "Traceback" not in err and not out.exists()


def test_a_training_configuration_mistake_is_a_usage_error(capsys, tmp_path):
    code = main(["train", "qualiclip", "--set", "no_such_setting=1", "-o", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "bad override 'no_such_setting=1'" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv", [["-b", "0"], ["-j", "-1"], ["--model"]])
def test_bad_option_values_are_usage_errors(argv):
    with pytest.raises(SystemExit) as stopped:
        main(["score", str(EXAMPLE_IMAGES), *argv])
    assert stopped.value.code == 2


def test_os_error_about_a_named_path_is_the_users():
    named = ["score", "photos/a.jpg", "--out=results/s.csv"]
    assert exits.names_a_given_path(FileNotFoundError(2, "No such file", "photos/a.jpg"), named)
    assert exits.names_a_given_path(PermissionError(13, "Permission denied", "photos/a.jpg/x"), named)
    assert exits.names_a_given_path(PermissionError(13, "Permission denied", "results/.s.csv.1234.tmp"), named)
    assert not exits.names_a_given_path(FileNotFoundError(2, "No such file", "cache/model.onnx"), named)
    assert not exits.names_a_given_path(OSError(28, "No space left on device"), named)


@pytest.mark.parametrize("order", ["missing first", "missing last"])
def test_a_missing_named_path_is_a_usage_error_before_any_work(weights, tmp_path, capsys, monkeypatch, order):
    home = tmp_path / "home"
    monkeypatch.setenv("IQART_HOME", str(home))
    missing = str(tmp_path / "missing.jpg")
    paths = [missing, str(EXAMPLE_IMAGES / "chelsea.png")]
    out = tmp_path / "s.csv"
    code = main(
        [
            "score",
            *(paths if order == "missing first" else paths[::-1]),
            "-m",
            MODEL,
            "-w",
            str(weights(MODEL)),
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"no such file or folder: {missing}" in err and "chelsea" not in err
    assert not out.exists() and not home.exists()  # nothing exported, nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("option", ["--ref", "--pairs", "--paths-from", "--weights"])
def test_missing_paths_named_by_options_are_usage_errors(weights, tmp_path, capsys, option):
    model = "bpclip-fr-tiny" if option in ("--ref", "--pairs") else MODEL
    argv = [] if option in ("--pairs", "--paths-from") else [str(EXAMPLE_IMAGES)]
    extra = [] if option == "--weights" else ["-w", str(weights(MODEL))]
    code = main(
        ["score", *argv, "-m", model, *extra, option, str(tmp_path / "absent"), "--out", str(tmp_path / "s.csv")]
    )
    assert code == 2 and f"no such file or folder: {option} {tmp_path / 'absent'}" in capsys.readouterr().err
    assert not (tmp_path / "s.csv").exists()


def test_report_checks_its_input_and_format_before_reading(tmp_path, capsys):
    assert main(["report", str(tmp_path / "none.csv"), "-o", str(tmp_path / "r.html")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "s.csv").write_text("path,score,error\n")
    assert main(["report", str(tmp_path / "s.csv"), "-o", str(tmp_path / "r.pdf")]) == 2
    assert "the report is .png or .html, not .pdf" in capsys.readouterr().err


def test_jsonl_escapes_the_line_separators_json_leaves_raw(tmp_path):
    out = tmp_path / "s.jsonl"
    rows = [
        {"path": f"a{SEPARATORS}b.png", "score": 0.5, "error": None},
        {"path": "c.png", "score": None, "error": "x"},
    ]
    with AtomicResultWriter(out, ["path", "score", "error"]) as writer:
        for row in rows:
            writer.write(row)
    text = out.read_text(encoding="utf-8")
    assert len(text.splitlines()) == 2 and not set(SEPARATORS) & set(text)
    assert "\\u2028\\u2029\\u0085" in text
    assert [json.loads(line) for line in text.splitlines()] == rows
    assert [r["path"] for r in read_results(out)] == [row["path"] for row in rows]


def test_scoring_a_file_named_with_line_separators_into_jsonl(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("IQART_HOME", str(tmp_path / "home"))
    image = tmp_path / f"odd{SEPARATORS}name.png"
    shutil.copy(EXAMPLE_IMAGES / "chelsea.png", image)
    out = tmp_path / "s.jsonl"
    assert (
        main(
            [
                "score",
                str(image),
                str(EXAMPLE_IMAGES / "coffee.png"),
                "-m",
                MODEL,
                "-w",
                str(weights(MODEL)),
                "--backend",
                "torch",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    rows = {json.loads(line)["path"]: json.loads(line) for line in lines}
    assert rows[str(image)]["error"] is None and rows[str(image)]["score"] is not None
