"""Shards in object storage: moto's S3 server started on 127.0.0.1 by these tests and reached
through s3fs, as s3fs's own tests reach it. Nothing is patched: the run finds the endpoint the
way a user points fsspec at one (the FSSPEC_S3 environment variable, which fsspec reads into
fsspec.config.conf on import; set in both places here, since this process imported fsspec
already), and its credentials in the AWS environment variables botocore reads.

What is shown: s3:// brace ranges, globs and Parquet tables score exactly as the same shards on
disk; --out-dir s3://... writes one object per shard and --resume skips them; a missing object,
a missing bucket, access denied and an unreachable endpoint are error rows naming the URL and
the reason, never the secret key; a glob matching nothing exits 2."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from iqart.engine.results.formats import read_result_file
from tests.helpers import REPO
from tests.shard_data import MODEL, photos, rows_by_key, score, write_img2dataset_parquet, write_with_webdataset

pytest.importorskip("s3fs", reason="the object-storage tests need s3fs (pip install -e '.[dev]')")
moto_server = pytest.importorskip("moto.server", reason="the object-storage tests need moto[server]")
pytestmark = pytest.mark.usefixtures("iqart_home")

ACCESS_KEY = "AKIAIQARTTESTS000001"
SECRET_KEY = "iqart-test-secret-never-in-a-row-0123456789"
FAST_FAILURE = {"connect_timeout": 2, "read_timeout": 20, "retries": {"max_attempts": 2, "mode": "standard"}}


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 API server on a free port of 127.0.0.1, for this module."""
    requests_log = logging.getLogger("werkzeug")
    level = requests_log.level
    requests_log.setLevel(logging.WARNING)  # not a line per request in a failure's report
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    requests_log.setLevel(level)


def point_fsspec_at(monkeypatch, endpoint: str, **options) -> dict:
    """Configure s3:// for this process and its children as a user would: FSSPEC_S3 (JSON
    storage options) in the environment, and the same in fsspec.config.conf."""
    import fsspec.config

    config = {"endpoint_url": endpoint, "config_kwargs": FAST_FAILURE, **options}
    monkeypatch.setenv("FSSPEC_S3", json.dumps(config))
    monkeypatch.setitem(fsspec.config.conf, "s3", config)
    return config


@pytest.fixture
def aws_environment(monkeypatch, tmp_path):
    """Credentials in the variables botocore reads; none of this machine's AWS configuration."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def bucket(s3_endpoint, aws_environment, monkeypatch, random_seed):
    """A fresh bucket on the server, and s3:// pointed at the server."""
    import fsspec

    point_fsspec_at(monkeypatch, s3_endpoint)
    name = f"iqart-{random_seed}"
    fs = fsspec.filesystem("s3")
    fs.mkdir(name)
    yield name
    fs.rm(name, recursive=True)


def s3():
    import fsspec

    return fsspec.filesystem("s3")


def upload_shards(tmp_path, rng, bucket: str, count: int = 3, per_shard: int = 3) -> list:
    """`count` webdataset shards written locally and copied to s3://BUCKET/shards/."""
    local = tmp_path / "local"
    local.mkdir()
    for index in range(count):
        path = write_with_webdataset(local / f"{index:05d}.tar", photos(rng, per_shard, first=index * per_shard))
        s3().put_file(str(path), f"{bucket}/shards/{path.name}")
    return sorted(local.iterdir())


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET_KEY not in text and ACCESS_KEY not in text


def test_s3_brace_ranges_globs_and_parquet_score_as_the_same_shards_on_disk(tmp_path, weights, rng, bucket):
    upload_shards(tmp_path, rng, bucket)
    table = write_img2dataset_parquet(tmp_path / "table.parquet", photos(rng, 4, first=100))
    s3().put_file(str(table), f"{bucket}/parquet/00000.parquet")
    w = weights(MODEL)
    assert score(str(tmp_path / "local"), "--out", str(tmp_path / "local.parquet"), weights=w) == 0
    expected = {row["key"]: row["score"] for row in read_result_file(tmp_path / "local.parquet")}
    assert len(expected) == 9

    for pattern in (f"s3://{bucket}/shards/{{00000..00002}}.tar", f"s3://{bucket}/shards/*.tar"):
        out = tmp_path / "s3.parquet"
        assert score(pattern, "--keep-fields", "url", "--out", str(out), weights=w) == 0
        rows = read_result_file(out)
        assert {row["key"]: row["score"] for row in rows} == expected, pattern
        for row in rows:
            assert row["shard"] == f"s3://{bucket}/shards/{int(row['key']) // 3:05d}.tar"
            assert row["url"].startswith(f"https://images.example.com/{row['key']}.")

    assert score(str(table), "--out", str(tmp_path / "table-local.parquet"), weights=w) == 0
    assert score(f"s3://{bucket}/parquet/", "--out", str(tmp_path / "table-s3.parquet"), weights=w) == 0  # a folder
    on_disk, in_s3 = rows_by_key(tmp_path / "table-local.parquet"), rows_by_key(tmp_path / "table-s3.parquet")
    assert {k: r["score"] for k, r in in_s3.items()} == {k: r["score"] for k, r in on_disk.items()}
    assert {r["shard"] for r in in_s3.values()} == {f"s3://{bucket}/parquet/00000.parquet"}


def objects_read(caplog, prefix: str) -> set[str]:
    """The objects under `prefix` that the server was asked for (GET, in werkzeug's request log)."""
    found = (re.search(r"GET (/\S+) HTTP", record.getMessage()) for record in caplog.records)
    return {match.group(1) for match in found if match and match.group(1).startswith(f"/{prefix}")}


def test_out_dir_in_s3_writes_one_object_per_shard_and_resume_skips_them(
    tmp_path, weights, rng, bucket, capsys, caplog
):
    upload_shards(tmp_path, rng, bucket)
    shards, out_dir = f"s3://{bucket}/shards/*.tar", f"s3://{bucket}/scores"
    w = weights(MODEL)
    assert score(shards, "--out-dir", out_dir, weights=w) == 0
    objects = sorted(s3().ls(f"{bucket}/scores"))
    assert objects == [f"{bucket}/scores/{i:05d}.parquet" for i in range(3)]
    for index, name in enumerate(objects):
        s3().get_file(name, str(tmp_path / "copy.parquet"))
        rows = read_result_file(tmp_path / "copy.parquet")
        assert {row["shard"] for row in rows} == {f"s3://{bucket}/shards/{index:05d}.tar"} and len(rows) == 3
        assert all(row["error"] is None for row in rows)
    etags = {name: s3().info(name)["ETag"] for name in objects}
    capsys.readouterr()

    with caplog.at_level(logging.INFO, logger="werkzeug"):
        assert score(shards, "--out-dir", out_dir, "--resume", weights=w) == 0
    assert "all 3 shards already scored" in capsys.readouterr().out
    assert objects_read(caplog, f"{bucket}/shards/") == set()  # no shard read again, not even opened
    s3().rm(objects[1])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        assert score(shards, "--out-dir", out_dir, "--resume", weights=w) == 0
    assert "1 shards, scored 3, failed 0, 2 shards already done" in capsys.readouterr().out
    assert objects_read(caplog, f"{bucket}/shards/") == {f"/{bucket}/shards/00001.tar"}
    assert {name: s3().info(name)["ETag"] for name in (objects[0], objects[2])} == {
        name: etags[name] for name in (objects[0], objects[2])
    }
    assert score(shards, "--out-dir", out_dir, "--resume", weights=weights(MODEL, 1)) == 2  # other weights
    assert "do not mix" in capsys.readouterr().err


def test_a_missing_object_or_bucket_is_an_error_row_naming_the_url(tmp_path, weights, rng, bucket, capsys):
    upload_shards(tmp_path, rng, bucket)
    s3().rm(f"{bucket}/shards/00001.tar")  # a shard img2dataset never wrote
    out = tmp_path / "rows.csv"
    listing = tmp_path / "shards.txt"  # a --paths-from list of URLs, as the range is a pattern of them
    listing.write_text("s3://iqart-no-such-bucket/shards/00000.tar\n")
    names = [f"s3://{bucket}/shards/{{00000..00002}}.tar", "--paths-from", str(listing)]
    assert score(*names, "--out", str(out), weights=weights(MODEL)) == 0
    rows = read_result_file(out)
    failed = {row["shard"]: row["error"] for row in rows if row["error"] is not None}
    assert set(failed) == {f"s3://{bucket}/shards/00001.tar", "s3://iqart-no-such-bucket/shards/00000.tar"}
    assert all(row["key"] is None for row in rows if row["error"] is not None)
    assert all("cannot read the shard: no such file or object" in error for error in failed.values())
    assert len([row for row in rows if row["error"] is None]) == 6
    captured = capsys.readouterr()
    assert_no_secret(out.read_text(), captured.out, captured.err)


@pytest.fixture
def enforce_auth(s3_endpoint):
    """enforce_auth(): from then on the server checks every request's credentials and policies
    (moto's reset-auth switch); it stops checking after the test."""

    def switch(count: str) -> None:
        request = urllib.request.Request(
            f"{s3_endpoint}/moto-api/reset-auth", count.encode(), {"Content-Type": "text/plain"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    switched = []
    yield lambda: (switch("0"), switched.append(True))
    if switched:
        switch("inf")


def test_access_denied_is_an_error_row_naming_the_url_and_no_credential(
    tmp_path, weights, rng, bucket, enforce_auth, s3_endpoint, monkeypatch, capsys
):
    """A user whose policies grant nothing: reading the shard is denied (403), one row says so."""
    import boto3

    upload_shards(tmp_path, rng, bucket, count=1)
    iam = boto3.client("iam", endpoint_url=s3_endpoint, region_name="us-east-1")
    user = f"reader-{bucket}"  # one server serves the whole module: a name of this test's own
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    point_fsspec_at(monkeypatch, s3_endpoint, key=key["AccessKeyId"], secret=key["SecretAccessKey"])
    w = weights(MODEL)
    enforce_auth()
    out = tmp_path / "rows.csv"
    assert score(f"s3://{bucket}/shards/00000.tar", "--out", str(out), weights=w) == 1  # nothing scored
    (row,) = read_result_file(out)
    assert row["shard"] == f"s3://{bucket}/shards/00000.tar" and row["key"] is None
    assert "cannot read the shard: access denied" in row["error"], row["error"]
    captured = capsys.readouterr()
    for text in (out.read_text(), captured.out, captured.err):
        assert_no_secret(text)
        assert key["SecretAccessKey"] not in text


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then closed): connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_endpoint_is_an_error_row_after_the_retries(
    tmp_path, weights, aws_environment, monkeypatch, capsys
):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    point_fsspec_at(monkeypatch, endpoint)
    out = tmp_path / "rows.csv"
    started = time.monotonic()
    assert score("s3://bucket/shards/{00000..00001}.tar", "--out", str(out), weights=weights(MODEL)) == 1
    assert time.monotonic() - started < 60  # the retries are the configured ones, not minutes of them
    rows = read_result_file(out)
    assert [row["shard"] for row in rows] == ["s3://bucket/shards/00000.tar", "s3://bucket/shards/00001.tar"]
    for row in rows:
        assert row["key"] is None and row["error"].startswith("cannot read the shard")
        assert endpoint.removeprefix("http://") in row["error"], row["error"]  # which endpoint it could not reach
    captured = capsys.readouterr()
    assert_no_secret(out.read_text(), captured.out, captured.err)


def test_an_s3_glob_or_folder_matching_nothing_exits_2_before_any_work(tmp_path, weights, bucket, capsys):
    out = tmp_path / "never.csv"
    for name in (f"s3://{bucket}/shards/*.tar", f"s3://{bucket}/nothing-here/"):
        assert score(name, "--out", str(out), weights=weights(MODEL)) == 2
        assert name.rstrip("/") in capsys.readouterr().err
    assert not out.exists()


def test_the_cli_finds_the_endpoint_and_credentials_in_its_environment(tmp_path, rng, weights, bucket):
    """A separate `iqart score` process, configured only by FSSPEC_S3 and the AWS variables."""
    upload_shards(tmp_path, rng, bucket, count=2, per_shard=2)
    command = [sys.executable, "-m", "iqart.engine.cli.main", "score", f"s3://{bucket}/shards/{{00000..00001}}.tar"]
    command += ["--model", MODEL, "-w", str(weights(MODEL)), "--out-dir", f"s3://{bucket}/scores"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=os.environ.copy(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(s3().ls(f"{bucket}/scores")) == [f"{bucket}/scores/0000{i}.parquet" for i in range(2)]
    assert_no_secret(done.stdout, done.stderr)
