"""Durable storage: one SQLite file, one JSON row per identity, group commit.

The hub writes each changed identity here and changes what others can see only once it
is stored. Writes that arrive while a commit is running wait and go into the next commit
together, so one fsync covers many acknowledgements: that is how thousands of twin
updates per second stay durable on one disk.
"""

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from . import files

log = logging.getLogger("localhub.store")

SCHEMA = """
CREATE TABLE IF NOT EXISTS identities (
    device_id TEXT NOT NULL,
    module_id TEXT NOT NULL,  -- '' for a device
    record BLOB NOT NULL,  -- JSON
    PRIMARY KEY (device_id, module_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

Key = tuple[str, str]
# Called in the loop, in the order the writes were queued, as soon as the commit holding a
# write ends: with None once it is on disk, or with the error that kept it off.
Settled = Callable[[BaseException | None], None]


def encode(record: dict) -> bytes:
    """The stored form of a record. Raises ValueError for a record that has none (a lone
    surrogate, say), so a caller can refuse a write before it changes anything."""
    try:
        return orjson.dumps(record)
    except orjson.JSONEncodeError as e:
        raise ValueError(f"the record cannot be stored as JSON: {e}") from e


class Store:
    def __init__(self, path: Path):
        # SQLite gives the -wal and -shm files the database file's mode, so a database
        # made private before the first connect keeps all three private.
        files.create_private(path)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit, so an acknowledged write survives
        # a power cut, not just a crash of this process.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        files.tighten(*(path.with_name(path.name + end) for end in ("-wal", "-shm")))
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="localhub-store")
        self._pending: dict[Key, bytes | None] = {}
        self._waiters: list[tuple[asyncio.Future, Settled | None]] = []
        self._flushing = False
        self.commits = 0

    # -- start-up (synchronous, before serving) --------------------------------------
    def load(self) -> list[tuple[str, str, dict]]:
        rows = self._db.execute("SELECT device_id, module_id, record FROM identities")
        return [(d, m, orjson.loads(r)) for d, m, r in rows]

    def setting(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_setting(self, name: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (name, value))

    # -- writes -------------------------------------------------------------------------
    def put(self, key: Key, data: bytes, settled: Settled | None = None) -> asyncio.Future:
        """Queue ``data`` (from ``encode``) as the row of ``key``. The future and
        ``settled`` report the commit; a later write of the same key supersedes it."""
        return self._enqueue(key, data, settled)

    def delete(self, key: Key, settled: Settled | None = None) -> asyncio.Future:
        return self._enqueue(key, None, settled)

    def _enqueue(self, key: Key, data: bytes | None, settled: Settled | None) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        self._pending[key] = data
        waiter = loop.create_future()
        self._waiters.append((waiter, settled))
        if not self._flushing:
            self._flushing = True
            loop.call_soon(self._flush, loop)
        return waiter

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, waiters = self._pending, self._waiters
        self._pending, self._waiters = {}, []
        job = loop.run_in_executor(self._writer, self._commit, batch)
        job.add_done_callback(lambda job: self._committed(loop, job, waiters))

    def _committed(self, loop, job: asyncio.Future, waiters: list) -> None:
        error = job.exception()
        if error is not None and self._pending:
            # What was queued meanwhile may build on what just failed (a patch on top of
            # a refused one): it fails too, and the caller starts again from disk's state.
            waiters = waiters + self._waiters
            self._pending, self._waiters = {}, []
        for waiter, settled in waiters:
            if settled is not None:
                try:
                    settled(error)
                except Exception:
                    log.exception("a commit callback failed")
            if waiter.done():  # its caller went away; the callback above still ran
                continue
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
        if self._pending:
            self._flush(loop)
        else:
            self._flushing = False

    def _commit(self, batch: dict[Key, bytes | None]) -> None:
        upserts = [(d, m, text) for (d, m), text in batch.items() if text is not None]
        deletes = [key for key, text in batch.items() if text is None]
        db = self._db
        db.execute("BEGIN")
        try:
            if deletes:
                db.executemany(
                    "DELETE FROM identities WHERE device_id = ? AND module_id = ?", deletes
                )
            if upserts:
                db.executemany("INSERT OR REPLACE INTO identities VALUES (?, ?, ?)", upserts)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a failed COMMIT may have rolled back already
                db.execute("ROLLBACK")
            raise
        self.commits += 1

    async def drain(self) -> None:
        """Wait until everything queued so far is on disk."""
        while self._flushing:
            await asyncio.sleep(0.001)

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._db.close()
