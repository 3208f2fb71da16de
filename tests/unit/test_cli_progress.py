"""cli.progress: Docker JSON progress streams as plain lines and as a live rich display."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from cli.progress import render
from engine.errors import EngineError

LAYER, OTHER = "afc745890d3e", "4a4fba2ed90c"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def downloading(ident: str, current: int, total: int) -> dict[str, object]:
    detail = {"current": current, "total": total}
    return {"status": "Downloading", "progressDetail": detail, "progress": "[=>  ]", "id": ident}


PULL: list[dict[str, object]] = [
    {"status": "Pulling from library/x", "id": "latest"},
    {"status": "Pulling fs layer", "progressDetail": {}, "id": LAYER},
    {"status": "Pulling fs layer", "progressDetail": {}, "id": OTHER},
    {"status": "Waiting", "progressDetail": {}, "id": OTHER},
    downloading(LAYER, 1024, 2_000_000),
    downloading(LAYER, 900_000, 2_000_000),
    downloading(LAYER, 2_000_000, 2_000_000),
    {"status": "Verifying Checksum", "progressDetail": {}, "id": LAYER},
    {"status": "Download complete", "progressDetail": {}, "id": LAYER},
    {"status": "Extracting", "progressDetail": {"current": 512, "total": 4096}, "id": LAYER},
    {"status": "Extracting", "progressDetail": {"current": 4096, "total": 4096}, "id": LAYER},
    {"status": "Pull complete", "progressDetail": {}, "id": LAYER},
    {"status": "Already exists", "progressDetail": {}, "id": OTHER},
    {"status": "Digest: sha256:" + "ab" * 32},
    {"status": "Status: Downloaded newer image for x:latest"},
]
AUX = {"progressDetail": {}, "aux": {"Tag": "v1", "Digest": "sha256:" + "cd" * 32, "Size": 527}}


def test_plain_prints_one_line_per_status_change() -> None:
    out = io.StringIO()
    assert render(PULL, out, tty=False) == []
    assert out.getvalue().splitlines() == [
        "latest: Pulling from library/x",
        f"{LAYER}: Pulling fs layer",
        f"{OTHER}: Pulling fs layer",
        f"{OTHER}: Waiting",
        f"{LAYER}: Downloading",
        f"{LAYER}: Verifying Checksum",
        f"{LAYER}: Download complete",
        f"{LAYER}: Extracting",
        f"{LAYER}: Pull complete",
        f"{OTHER}: Already exists",
        "Digest: sha256:" + "ab" * 32,
        "Status: Downloaded newer image for x:latest",
    ]


def test_plain_returns_aux_and_repeats_retries() -> None:
    out = io.StringIO()
    stream = [
        {"status": "The push refers to repository [localhost:5000/bb]"},
        {"status": "Preparing", "progressDetail": {}, "id": OTHER},
        {"status": "Retrying in 2 seconds", "progressDetail": {}, "id": OTHER},
        {"status": "Retrying in 1 second", "progressDetail": {}, "id": OTHER},
        {"status": "Pushing", "progressDetail": {"current": 1, "total": 9}, "id": OTHER},
        {"status": "Pushed", "progressDetail": {}, "id": OTHER},
        {"status": "v1: digest: sha256:" + "cd" * 32 + " size: 527"},
        AUX,
    ]
    assert render(stream, out, tty=False) == [AUX]
    assert out.getvalue().splitlines() == [
        "The push refers to repository [localhost:5000/bb]",
        f"{OTHER}: Preparing",
        f"{OTHER}: Retrying in 2 seconds",
        f"{OTHER}: Retrying in 1 second",
        f"{OTHER}: Pushing",
        f"{OTHER}: Pushed",
        "v1: digest: sha256:" + "cd" * 32 + " size: 527",
    ]


def test_not_a_terminal_by_default() -> None:
    out = io.StringIO()
    render([{"status": "Waiting", "id": LAYER}], out)
    assert out.getvalue() == f"{LAYER}: Waiting\n"


@pytest.mark.parametrize("tty", [False, True])
def test_in_band_error_raises_after_what_came_before(tty: bool) -> None:
    def stream() -> Iterator[dict[str, object]]:
        yield {"status": "Pulling fs layer", "progressDetail": {}, "id": LAYER}
        yield {"errorDetail": {"message": "boom"}, "error": "127.0.0.1:5000: boom"}
        raise AssertionError("read past the error")

    out = io.StringIO()
    with pytest.raises(EngineError, match="127.0.0.1:5000: boom"):
        render(stream(), out, tty=tty)
    assert "Pulling fs layer" in out.getvalue()


def last_frame(screen: str, rows: int) -> list[str]:
    """The rows of the live display as last drawn: the last *rows* lines, past any ``\r``."""
    lines = ANSI.sub("", screen).rstrip("\n").split("\n")
    return [line.rsplit("\r", 1)[-1].rstrip() for line in lines[-rows:]]


def test_terminal_draws_rows_bars_and_lines() -> None:
    out = io.StringIO()
    midway = [*PULL[:6], {"status": "Digest: sha256:" + "ab" * 32}, AUX]
    assert render(midway, out, tty=True) == [AUX]
    title, layer, other = last_frame(out.getvalue(), 3)
    assert title == "latest: Pulling from library/x"
    assert re.fullmatch(rf"{LAYER}: Downloading +[━╸╺]+ 0\.9/2\.0 MB .*", layer)
    assert other == f"{OTHER}: Waiting"  # no bar for a layer that is not transferring
    lines = [line.rsplit("\r", 1)[-1] for line in ANSI.sub("", out.getvalue()).split("\n")]
    assert "Digest: sha256:" + "ab" * 32 in lines  # printed whole, above the rows


def test_terminal_bar_restarts_for_extracting() -> None:
    out = io.StringIO()
    render([*PULL[:10], {"status": "line"}], out, tty=True)
    layer = last_frame(out.getvalue(), 3)[1]
    assert re.fullmatch(rf"{LAYER}: Extracting +[━╸╺]+ 0\.5/4\.1 kB .*", layer)


def test_terminal_final_state_has_no_bars_left() -> None:
    out = io.StringIO()
    render(PULL, out, tty=True)
    assert last_frame(out.getvalue(), 3) == [
        "latest: Pulling from library/x",
        f"{LAYER}: Pull complete",
        f"{OTHER}: Already exists",
    ]
    assert "Status: Downloaded newer image for x:latest" in out.getvalue()


def test_import_does_not_load_rich() -> None:
    code = "import sys, cli.progress; print('rich' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
