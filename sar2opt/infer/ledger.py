"""Completed-tile ledger and a store lock: what makes a run resumable and runs exclusive.

The ledger is an append-only text file, one ``<time_iso> <bi> <bj>`` line per block whose
chunks are fully written. Only the driver appends (after the writer reports the block), each
batch as one ``write`` + ``fsync``, so a kill at any moment leaves at most a torn last line,
which is ignored: that block is recomputed and rewritten with the same bytes on resume.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable
from pathlib import Path

from sar2opt.errors import Sar2OptError
from sar2opt.infer.store import LEDGER_FILE, lock_path

BlockKey = tuple[str, int, int]


class StoreLockedError(Sar2OptError):
    """Another run holds the store's lock."""


def parse_ledger(text: str) -> set[BlockKey]:
    """Keys of complete lines; a final line without a newline (torn by a kill) is skipped."""
    done: set[BlockKey] = set()
    lines = text.split("\n")
    for line in lines[:-1]:  # the last element is '' or a torn line
        parts = line.split()
        if len(parts) != 3:
            continue
        try:
            done.add((parts[0], int(parts[1]), int(parts[2])))
        except ValueError:
            continue
    return done


class TileLedger:
    """The blocks of a store already written, keyed by (time ISO, block row, block col)."""

    def __init__(self, store: str | Path) -> None:
        self.path = Path(store) / LEDGER_FILE

    def done(self) -> set[BlockKey]:
        if not self.path.exists():
            return set()
        return parse_ledger(self.path.read_text())

    def record(self, keys: Iterable[BlockKey]) -> int:
        """Append ``keys`` durably; returns how many were written."""
        lines = "".join(f"{t} {int(bi)} {int(bj)}\n" for t, bi, bj in keys)
        if not lines:
            return 0
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # A torn line from a killed run must not swallow the first new key.
            if os.fstat(fd).st_size and not self._ends_with_newline():
                lines = "\n" + lines
            os.write(fd, lines.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return lines.count("\n") - lines.startswith("\n")

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"


class StoreLock:
    """Exclusive, non-blocking ``flock`` on ``store.lock_path`` for the life of a ``with`` block.

    The kernel drops the lock when the holder dies, so a killed run never blocks the next.
    POSIX file systems only (not S3): on object stores run one writer per store (the
    CronJob's ``concurrencyPolicy: Forbid`` does that).
    """

    def __init__(self, store: str | Path) -> None:
        self.store = Path(store)
        self.path = lock_path(store)
        self._fd: int | None = None

    def __enter__(self) -> StoreLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(
                f"another run is writing {self.store}; try again when it ends"
            ) from None
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
