"""Job history in the GraphDB ``jobs`` table, written off the event loop.

``record`` only appends the summary to a deque; one writer thread, woken by the first summary of
a batch, waits ``batch_delay``, then commits everything pending in one transaction and prunes the
table to the newest ``keep`` rows. A busy API thus costs one fsync per batch rather than one per
job, and the event loop pays one deque append per job (no lock, no thread wake-up) while a batch
is open. ``recent`` waits for the rows recorded before it was called, so what a client reads
includes every job that had ended when it asked.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time

from engine.job import JobSummary
from graph.db import GraphDB, Row

log = logging.getLogger(__name__)


class JobHistory:
    """The engine's Recorder backed by GraphDB; bounded to the newest *keep* jobs."""

    def __init__(self, db: GraphDB, keep: int = 1000, batch_delay: float = 0.05) -> None:
        self.db, self.keep, self._delay = db, keep, batch_delay
        self._pending: collections.deque[JobSummary] = collections.deque()
        self._wake = threading.Event()
        self._written = threading.Condition()
        self._recorded = 0  # summaries appended so far (by the event loop's thread only)
        self._landed = 0  # summaries written (or given up on) so far
        self._stopping = False
        self._thread = threading.Thread(target=self._writer, name="jobhistory", daemon=True)
        self._thread.start()

    def record(self, job: JobSummary) -> None:
        """Queue one finished job for writing."""
        self._pending.append(job)
        self._recorded += 1
        if not self._wake.is_set():
            self._wake.set()

    def recent(self, limit: int = 50) -> list[JobSummary]:
        """Return the newest *limit* finished jobs, newest first (blocks until queued ones land)."""
        target = self._recorded
        with self._written:
            self._written.wait_for(lambda: self._landed >= target or not self._thread.is_alive())
        rows = self.db.query("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
        return [_summary(row) for row in rows]

    def close(self) -> None:
        """Write what is queued and stop the writer thread."""
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _writer(self) -> None:
        while True:
            self._wake.wait()
            if not self._stopping:
                time.sleep(self._delay)  # let the batch fill
            self._wake.clear()  # before draining: a summary appended after this wakes us again
            jobs = []
            while self._pending:
                jobs.append(self._pending.popleft())
            try:
                if jobs:
                    self._write(jobs)
            except Exception:
                log.exception("could not write %d job(s) to the history", len(jobs))
            finally:
                with self._written:
                    self._landed += len(jobs)
                    self._written.notify_all()
            if self._stopping and not self._pending:
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
