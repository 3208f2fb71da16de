"""Job history in the GraphDB: batched writes, bounded, survives reopening."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from engine.job import JobSummary
from graph.db import GraphDB
from graph.jobhistory import JobHistory


def summary(i: int, state: str = "ok") -> JobSummary:
    return JobSummary(
        id=f"job{i:04d}",
        name="sleep",
        args=("a", str(i)),
        params={"seconds": i},
        state=state,  # type: ignore[arg-type]
        status=0 if state == "ok" else 1,
        error=None if state == "ok" else "boom",
        started=1000.0 + i,
        ended=1001.0 + i,
    )


def test_recent_is_newest_first_and_complete(tmp_path: Path) -> None:
    db = GraphDB(tmp_path / "graph.db")
    history = JobHistory(db)
    for i in range(5):
        history.record(summary(i, "error" if i == 3 else "ok"))
    recent = history.recent(3)
    assert [j.id for j in recent] == ["job0004", "job0003", "job0002"]
    assert recent[1].state == "error" and recent[1].error == "boom"
    assert recent[0].args == ("a", "4") and recent[0].params == {"seconds": 4}
    history.close()
    db.close()


def test_history_is_bounded(tmp_path: Path) -> None:
    db = GraphDB(tmp_path / "graph.db")
    history = JobHistory(db, keep=10)
    for i in range(35):
        history.record(summary(i))
    assert len(history.recent(100)) == 10
    assert history.recent(1)[0].id == "job0034"
    history.close()
    db.close()


def test_history_survives_reopening(tmp_path: Path) -> None:
    db = GraphDB(tmp_path / "graph.db")
    history = JobHistory(db)
    history.record(summary(1))
    history.close()
    db.close()
    db = GraphDB(tmp_path / "graph.db")
    assert [j.id for j in JobHistory(db).recent()] == ["job0001"]
    db.close()


def test_database_settings(tmp_path: Path) -> None:
    GraphDB(tmp_path / "graph.db").close()
    conn = sqlite3.connect(tmp_path / "graph.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    conn.close()
