"""Job history in the GraphDB ``jobs`` table, written off the event loop.

``record`` only queues the summary; one writer thread commits queued summaries in batches (one
transaction each) and prunes the table to the newest ``keep`` rows, so a busy API costs one
fsync per batch rather than one per job. ``recent`` waits for queued rows to be written first, so
what a client reads includes every job that had ended when it asked.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Final

from engine.job import JobSummary
from graph.db import GraphDB, Row

log = logging.getLogger(__name__)

_STOP: Final = object()


class JobHistory:
    """The engine's Recorder backed by GraphDB; bounded to the newest *keep* jobs."""

    def __init__(self, db: GraphDB, keep: int = 1000, batch_delay: float = 0.05) -> None:
        self.db, self.keep, self._delay = db, keep, batch_delay
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._writer, name="jobhistory", daemon=True)
        self._thread.start()

    def record(self, job: JobSummary) -> None:
        """Queue one finished job for writing."""
        self._queue.put(job)

    def recent(self, limit: int = 50) -> list[JobSummary]:
        """Return the newest *limit* finished jobs, newest first (blocks until queued ones land)."""
        self._queue.join()
        rows = self.db.query("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
        return [_summary(row) for row in rows]

    def close(self) -> None:
        """Write what is queued and stop the writer thread."""
        self._queue.put(_STOP)
        self._thread.join()

    def _writer(self) -> None:
        while True:
            batch = [self._queue.get()]
            try:
                while batch[-1] is not _STOP:
                    batch.append(self._queue.get(timeout=self._delay))
            except queue.Empty:
                pass
            jobs = [j for j in batch if isinstance(j, JobSummary)]
            try:
                if jobs:
                    self._write(jobs)
            except Exception:
                log.exception("could not write %d job(s) to the history", len(jobs))
            finally:
                for _ in batch:
                    self._queue.task_done()
            if batch[-1] is _STOP:
                return

    def _write(self, jobs: list[JobSummary]) -> None:
        with self.db.write() as tx:
            tx.table("jobs").insert_all(
                (
                    {
                        "id": j.id,
                        "name": j.name,
                        "args": json.dumps(list(j.args)),
                        "params": json.dumps(j.params, default=str),
                        "state": j.state,
                        "status": j.status,
                        "error": j.error,
                        "started": j.started or j.ended,
                        "ended": j.ended,
                    }
                    for j in jobs
                ),
                replace=True,
            )
            tx.execute(
                "DELETE FROM jobs WHERE seq <= (SELECT MAX(seq) FROM jobs) - ?", (self.keep,)
            )


def _summary(row: Row) -> JobSummary:
    return JobSummary(
        id=row["id"],
        name=row["name"],
        args=tuple(json.loads(row["args"])),
        params=json.loads(row["params"]),
        state=row["state"],
        status=row["status"],
        error=row["error"],
        started=row["started"],
        ended=row["ended"],
    )
