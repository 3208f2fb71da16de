"""Pieces of pull and push that need no registry: progress messages, references, the blob store,
the layer store's refusal of data after a tar's end, and crash points."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from engine.errors import InvalidArgument
from graph.archive.compression import TRAILING_MAX
from graph.blobs import BlobRecord, BlobStore
from graph.db import GraphDB
from jobs.progress import Throttle, bar, counted, human_size, short, status
from jobs.pull import reference_of


def test_human_size_is_dockers_decimal_units() -> None:
    assert human_size(0) == "0B"
    assert human_size(999) == "999B"
    assert human_size(1024) == "1.024kB"
    assert human_size(2_048_000) == "2.048MB"
    assert human_size(161_535_940) == "161.5MB"


def test_bar_draws_fifty_columns_with_an_arrow_until_done() -> None:
    half = bar(1024, 2048)
    assert half.startswith("[" + "=" * 25 + ">" + " " * 24 + "] ")
    assert half.endswith("1.024kB/2.048kB")
    assert bar(2048, 2048).startswith("[" + "=" * 50 + "] ")
    assert bar(5, 0) == "5B"


def test_messages_have_dockers_shapes() -> None:
    assert status("Digest: sha256:x") == {"status": "Digest: sha256:x"}
    assert status("Pull complete", "abc") == {
        "status": "Pull complete",
        "progressDetail": {},
        "id": "abc",
    }
    message = counted("Downloading", "abc", 1, 2)
    assert message["progressDetail"] == {"current": 1, "total": 2}
    assert short("sha256:" + "ab" * 32) == "ab" * 6


def test_throttle_lets_through_the_first_and_the_last() -> None:
    seen: list[dict[str, object]] = []
    shown = Throttle(seen.append, "Downloading", "abc", 100)
    for n in range(1, 101):
        shown(n)
    assert seen[0]["progressDetail"] == {"current": 1, "total": 100}
    assert seen[-1]["progressDetail"] == {"current": 100, "total": 100}
    assert len(seen) < 10


@pytest.mark.parametrize(
    ("name", "tag", "want"),
    [
        ("busybox", "", "docker.io/library/busybox"),
        ("busybox", "1.36", "docker.io/library/busybox:1.36"),
        ("127.0.0.1:5000/bb", "v1", "127.0.0.1:5000/bb:v1"),
        ("127.0.0.1:5000/bb:old", "v2", "127.0.0.1:5000/bb:v2"),
        ("bb", "sha256:" + "a" * 64, "docker.io/library/bb@sha256:" + "a" * 64),
    ],
)
def test_reference_of_takes_the_tag_param_over_the_name(name: str, tag: str, want: str) -> None:
    assert str(reference_of(name, tag)) == want


def test_reference_of_refuses_a_bad_digest() -> None:
    with pytest.raises(InvalidArgument):
        reference_of("bb", "sha256:../../etc")


def test_blob_store_remembers_where_blobs_are_and_keeps_read_only_files(tmp_path: Path) -> None:
    db = GraphDB(tmp_path / "graph.db")
    try:
        store = BlobStore(db, tmp_path / "blobs")
        digest = "sha256:" + "b" * 64
        staged = tmp_path / "staged"
        staged.write_bytes(b"gzip bytes")
        cached = BlobRecord("sha256:" + "d" * 64, digest, "gzip", 10, "", "")
        store.keep(staged, cached)
        assert store.cached(cached.diff_id) == cached
        assert not os.stat(store.path(digest)).st_mode & 0o222
        hint = BlobRecord(cached.diff_id, digest, "gzip", 10, "127.0.0.1:5000", "bb")
        store.remember(hint)
        store.remember(hint)  # once, whatever the number of pushes
        assert store.known(cached.diff_id, "127.0.0.1:5000") == [hint]
        store.forget(digest, "127.0.0.1:5000", "bb")
        assert store.known(cached.diff_id, "127.0.0.1:5000") == []
        assert store.prune({cached.diff_id}) == 0
        assert store.prune(set()) == 1
        assert not store.path(digest).exists()
        assert store.cached(cached.diff_id) is None
    finally:
        db.close()


def _tar_with_trailing(extra: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tf:
        info = tarfile.TarInfo("hello")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))
    return out.getvalue() + b"\0" * extra


def test_the_layer_store_refuses_a_bomb_of_zeros_after_the_tar(tmp_path: Path) -> None:
    from drivers.graph.vfs import VfsDriver
    from graph.layers import LayerStore

    db = GraphDB(tmp_path / "graph.db")
    try:
        layers = LayerStore(db, VfsDriver(tmp_path / "vfs"), tmp_path / "tars")
        layers.register(io.BytesIO(_tar_with_trailing(10240)))  # padding is fine
        with pytest.raises(InvalidArgument, match="after the tar"):
            layers.register(io.BytesIO(_tar_with_trailing(3 * TRAILING_MAX)))
        assert not [p for p in (tmp_path / "tars").iterdir() if p.name.startswith(".")]
        assert len(layers.all()) == 1
    finally:
        db.close()


def test_a_crash_point_kills_the_process_only_when_named() -> None:
    code = "from engine.crashpoint import reach; reach('a'); reach('b'); reach('b'); print('alive')"
    env = {**os.environ, "ENGINE_CRASHPOINT": "b:2"}
    died = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert died.returncode == -9 and died.stdout == ""
    env["ENGINE_CRASHPOINT"] = "c"
    lived = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert lived.returncode == 0 and lived.stdout == "alive\n"


def test_secret_params_are_kept_out_of_the_job_history() -> None:
    import asyncio

    from engine import Engine
    from engine.errors import Unavailable
    from engine.job import REDACTED
    from jobs import push

    engine = Engine()
    push.install(engine)
    job = engine.job("push", "x", tag="v1", auth="c2VjcmV0")
    with pytest.raises(Unavailable):  # no image store here: the job fails, its record stays
        asyncio.run(job.run())
    summary = job.summary()
    assert summary.params == {"tag": "v1", "auth": REDACTED}
    assert engine.job("push", "x").summary().params["auth"] == ""
