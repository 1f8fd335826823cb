"""The job store: one SQLite file `<data-dir>/jobs.sqlite`, safe for several threads and processes.

WAL journal (readers never block the writer), a busy timeout, one connection per thread, autocommit
for single statements and short `BEGIN IMMEDIATE` transactions where a read decides a write (claiming
the next queued job), so two UI processes never start the same job twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

STATUSES = ("queued", "running", "succeeded", "failed", "stopped", "interrupted", "cancelled")
ACTIVE = ("queued", "running")
JSON_FIELDS = ("argv", "launcher", "config", "meta")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,  -- FIFO order
    id               TEXT UNIQUE NOT NULL,
    kind             TEXT NOT NULL,
    recipe           TEXT NOT NULL DEFAULT '',
    status           TEXT NOT NULL,
    device_set       TEXT NOT NULL DEFAULT 'cpu',
    pid              INTEGER,
    pgid             INTEGER,
    proc_create_time REAL,                 -- psutil create_time of pid: a recycled pid is not our job
    owner            TEXT,                 -- engine instance that started the current attempt
    created_at       REAL NOT NULL,
    started_at       REAL,
    ended_at         REAL,
    run_dir          TEXT NOT NULL,
    command          TEXT NOT NULL DEFAULT '',  -- the argv shell-quoted, for display
    argv             TEXT NOT NULL DEFAULT '[]',
    exit_code        INTEGER,
    error            TEXT NOT NULL DEFAULT '',
    model            TEXT NOT NULL DEFAULT '',
    dataset          TEXT NOT NULL DEFAULT '',
    launcher         TEXT NOT NULL DEFAULT '{}',  -- LaunchSpec as JSON
    config           TEXT NOT NULL DEFAULT '{}',
    meta             TEXT NOT NULL DEFAULT '{}',
    final_loss       REAL,
    stop_requested   INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    updated_at       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
"""


def _row_to_dict(row: sqlite3.Row) -> dict:
    d = dict(row)
    for k in JSON_FIELDS:
        try:
            d[k] = json.loads(d[k]) if d.get(k) else ({} if k != "argv" else [])
        except (TypeError, ValueError):
            d[k] = {} if k != "argv" else []
    return d


def _encode(fields: dict) -> dict:
    out = {}
    for k, v in fields.items():
        out[k] = json.dumps(v) if k in JSON_FIELDS and not isinstance(v, str) else v
    return out


class JobStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        con = self._con()
        con.execute("PRAGMA journal_mode=WAL")
        self._retry(lambda: con.executescript(SCHEMA))

    # -- connections --
    def _con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(str(self.path), timeout=30, isolation_level=None, check_same_thread=False)
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA busy_timeout=30000")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA foreign_keys=ON")
            self._local.con = con
        return con

    @staticmethod
    def _retry(fn: Callable, tries: int = 20):
        for i in range(tries):
            try:
                return fn()
            except sqlite3.OperationalError as e:  # "database is locked" beyond busy_timeout
                if "locked" not in str(e) and "busy" not in str(e) or i == tries - 1:
                    raise
                time.sleep(0.05 * (i + 1))

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    # -- CRUD --
    def insert(self, job: dict) -> None:
        job = _encode({**job, "updated_at": time.time()})
        cols = ", ".join(job)
        qs = ", ".join("?" for _ in job)
        self._retry(
            lambda: self._con().execute(f"INSERT INTO jobs ({cols}) VALUES ({qs})", tuple(job.values()))
        )

    def get(self, job_id: str) -> dict | None:
        row = self._retry(lambda: self._con().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone())
        return _row_to_dict(row) if row else None

    def list(self, statuses: Iterable[str] | None = None) -> list[dict]:
        if statuses:
            st = tuple(statuses)
            q = f"SELECT * FROM jobs WHERE status IN ({','.join('?' * len(st))}) ORDER BY seq"
            rows = self._retry(lambda: self._con().execute(q, st).fetchall())
        else:
            rows = self._retry(lambda: self._con().execute("SELECT * FROM jobs ORDER BY seq").fetchall())
        return [_row_to_dict(r) for r in rows]

    def update(self, job_id: str, expect_status: str | Iterable[str] | None = None, **fields) -> bool:
        """Set fields; with expect_status only if the row is still in that status. True if a row changed."""
        fields = _encode({**fields, "updated_at": time.time()})
        sets = ", ".join(f"{k}=?" for k in fields)
        args: list = [*fields.values(), job_id]
        q = f"UPDATE jobs SET {sets} WHERE id=?"
        if expect_status is not None:
            st = (expect_status,) if isinstance(expect_status, str) else tuple(expect_status)
            q += f" AND status IN ({','.join('?' * len(st))})"
            args += st
        cur = self._retry(lambda: self._con().execute(q, args))
        return cur.rowcount > 0

    def delete(self, job_id: str, refuse_statuses: Iterable[str] = ACTIVE) -> bool:
        st = tuple(refuse_statuses)
        cur = self._retry(
            lambda: self._con().execute(
                f"DELETE FROM jobs WHERE id=? AND status NOT IN ({','.join('?' * len(st))})", (job_id, *st)
            )
        )
        return cur.rowcount > 0

    def claim_queued(self, conflicts: Callable[[str, str], bool], owner: str,
                     ready: Callable[[dict], bool] | None = None) -> list[dict]:
        """Atomically move the queued jobs that may start now to running (pid still NULL).

        FIFO per device set: a queued job starts only when no running job and no earlier queued job
        uses a conflicting device set. A job `ready` says may not start yet (a pipeline step waiting for the
        step before it) is passed over without holding up the jobs behind it. Runs inside BEGIN IMMEDIATE, so
        of two processes calling this at the same time only one claims a given job.
        """

        def tx():
            con = self._con()
            con.execute("BEGIN IMMEDIATE")
            try:
                rows = con.execute(
                    "SELECT * FROM jobs WHERE status IN ('queued','running') ORDER BY seq"
                ).fetchall()
                busy = [r["device_set"] for r in rows if r["status"] == "running"]
                claimed = []
                now = time.time()
                for r in rows:
                    if r["status"] != "queued":
                        continue
                    ds = r["device_set"]
                    if ready is not None and not ready(_row_to_dict(r)):
                        continue  # waiting for another job: it holds no devices yet
                    if any(conflicts(ds, b) for b in busy):
                        busy.append(ds)  # it waits, and so does anything behind it on these devices
                        continue
                    con.execute(
                        "UPDATE jobs SET status='running', pid=NULL, pgid=NULL, proc_create_time=NULL,"
                        " owner=?, started_at=?, ended_at=NULL, exit_code=NULL, error='',"
                        " stop_requested=0, attempts=attempts+1, updated_at=? WHERE id=?",
                        (owner, now, now, r["id"]),
                    )
                    busy.append(ds)
                    claimed.append(r["id"])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            return claimed

        ids = self._retry(tx)
        return [self.get(i) for i in ids]
