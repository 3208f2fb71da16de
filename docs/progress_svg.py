#!/usr/bin/env python3
"""Draw docs/pull-progress.svg: what `dockyard pull` shows on a terminal, mid-pull.

    .venv/bin/python docs/progress_svg.py

Feeds the CLI's progress display the messages of a pull caught halfway (one layer already
there, one extracting, two downloading) and saves the frame as SVG with rich.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

from rich.console import Console

from cli.progress import _Live

MB = 1_000_000
MESSAGES = [
    ("c636bef41bd1", "Already exists", None, None),
    ("6e771e15690e", "Extracting", 61 * MB, 96 * MB),
    ("4f4fb700ef54", "Downloading", 38 * MB, 71 * MB),
    ("a3ed95caeb02", "Downloading", 12 * MB, 33 * MB),
    ("9d1b2b5e3f0c", "Waiting", None, None),
]


def main() -> None:
    live = _Live(io.StringIO())
    for ident, status, current, total in MESSAGES:
        message: dict[str, object] = {"status": status, "id": ident, "progressDetail": {}}
        if current is not None:
            message["progressDetail"] = {"current": current // 2, "total": total}
            live._row(ident, status, message)
            time.sleep(0.05)  # two samples, so the speed column has something to show
            message["progressDetail"] = {"current": current, "total": total}
        live._row(ident, status, message)
    console = Console(record=True, width=100, file=io.StringIO(), force_terminal=True)
    console.print("v1: Pulling from bench/pull")
    console.print(live.progress.get_renderable())
    out = Path(__file__).with_name("pull-progress.svg")
    console.save_svg(str(out), title="dockyard pull 127.0.0.1:5000/bench/pull:v1")
    print(out)


if __name__ == "__main__":
    main()
