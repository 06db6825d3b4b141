"""Completed-tile ledger and a store lock: what makes a run resumable and runs exclusive.

The ledger is an append-only text file, one ``<time_iso> <bi> <bj>`` line per block whose
chunks are fully written. Only the driver appends (after the writer reports the block), each
batch as one ``write`` + ``fsync``, so a kill at any moment leaves at most a torn last line,
which is ignored: that block is recomputed and rewritten with the same bytes on resume.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator, Set
from pathlib import Path

import numpy as np

from sar2opt.errors import Sar2OptError
from sar2opt.infer.store import LEDGER_FILE, LEGACY_LEDGER_FILE, ensure_sidecar, lock_path

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


def _code(bi: int | np.ndarray, bj: int | np.ndarray) -> int | np.ndarray:
    """One int64 per block: ``bi`` in the high 32 bits, ``bj`` in the low ones."""
    return (np.int64(bi) << np.int64(32)) | np.int64(bj)


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting (numpy's hash-based unique is ~20x slower on int64 here)."""
    a = np.sort(np.asarray(a, np.int64))
    return a[np.concatenate([[True], a[1:] != a[:-1]])] if a.size else a


class DoneBlocks(Set):
    """The blocks of a ledger as a set of keys, held as one sorted int64 array of block codes
    per time step (8 bytes a block instead of a ~150-byte tuple; a million-line ledger is
    8 MB), with a vectorised ``missing`` for the task walk (``run.block_tasks``)."""

    def __init__(self, codes: dict[str, np.ndarray] | None = None) -> None:
        self._codes = {t: _sorted_unique(c) for t, c in (codes or {}).items()}

    @classmethod
    def from_keys(cls, keys: Iterable[BlockKey]) -> DoneBlocks:
        by_time: dict[str, list[int]] = {}
        for t, bi, bj in keys:
            by_time.setdefault(t, []).append((int(bi) << 32) | int(bj))
        return cls(by_time)

    def missing(self, time: str, bi: int, cols: np.ndarray) -> np.ndarray:
        """The columns of ``cols`` (block row ``bi`` at ``time``) not in the ledger."""
        cols = np.asarray(cols, np.int64)
        done = self._codes.get(time)
        if done is None or not done.size:
            return cols
        codes = _code(bi, cols)
        i = np.minimum(np.searchsorted(done, codes), done.size - 1)
        return cols[done[i] != codes]

    def __contains__(self, key: object) -> bool:
        try:
            t, bi, bj = key  # type: ignore[misc]
        except (TypeError, ValueError):
            return False
        return not self.missing(t, int(bi), np.array([int(bj)])).size

    def __iter__(self) -> Iterator[BlockKey]:
        for t, codes in self._codes.items():
            for c in codes.tolist():
                yield t, c >> 32, c & 0xFFFFFFFF

    def __len__(self) -> int:
        return sum(c.size for c in self._codes.values())


def _digits(raw: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The unsigned decimal numbers in ``raw[start:end]`` of each line, and where they are
    one (1-18 digits, nothing else)."""
    n = end - start
    ok = (n >= 1) & (n <= 18)
    val = np.zeros(start.size, np.int64)
    for j in range(int(n[ok].max()) if ok.any() else 0):
        on = ok & (j < n)
        d = raw[np.where(on, start + j, 0)].astype(np.int64) - 48
        ok &= ~on | ((d >= 0) & (d <= 9))
        val = np.where(on, val * 10 + d, val)
    return val, ok


def _time_ids(raw: np.ndarray, start: np.ndarray, end: np.ndarray, chunk: int = 1 << 17):
    """An id per line for the bytes ``raw[start:end]`` (its time field), and the time of
    each id. Lines are compared with the previous one in numpy (a ledger holds long runs of
    one time step); only where the time changes is it decoded in Python."""
    n = end - start
    width = int(n.max())
    change = np.ones(start.size, bool)
    change[1:] = n[1:] != n[:-1]
    cols = np.arange(width)
    prev = None
    for i in range(0, start.size, chunk):  # a (lines, width) window at a time: ~4 MB
        idx = start[i : i + chunk, None] + cols
        g = np.where(cols < n[i : i + chunk, None], raw[np.minimum(idx, raw.size - 1)], 0)
        same = np.concatenate([g[:1] if prev is None else prev, g[:-1]]) == g
        change[i : i + chunk] |= ~same.all(axis=1)
        prev = g[-1:]
    change[0] = True
    run = np.flatnonzero(change)
    ids: dict[str, int] = {}
    run_id = np.array(
        [ids.setdefault(raw[start[r] : end[r]].tobytes().decode(), len(ids)) for r in run],
        np.int64,
    )
    return run_id[np.cumsum(change) - 1], list(ids)


def parse_ledger_blocks(text: str) -> DoneBlocks:
    """``parse_ledger`` as a ``DoneBlocks``, in numpy: a million lines in about a second.

    Lines of the form the ledger writes (``<time> <bi> <bj>``, single spaces, unsigned
    numbers) are parsed in vectorised passes over the bytes; any other complete line (a torn
    line that a later run completed with its newline) goes through ``parse_ledger``, and is
    kept if its numbers can be a block's (non-negative).
    """
    body = text[: text.rfind("\n") + 1]  # a final line without a newline was torn by a kill
    if not body:
        return DoneBlocks()
    raw = np.frombuffer(body.encode(), np.uint8)
    ends = np.flatnonzero(raw == 10)
    starts = np.concatenate([[0], ends[:-1] + 1])
    sp_pos = np.flatnonzero(raw == 32)
    per_line = np.bincount(np.searchsorted(ends, sp_pos), minlength=ends.size)
    ok = per_line == 2
    k = np.concatenate([[0], np.cumsum(per_line)[:-1]])  # index of each line's first space
    k = np.where(ok, k, 0)
    s1 = np.where(ok, sp_pos[np.minimum(k, sp_pos.size - 1)] if sp_pos.size else 0, 0)
    s2 = np.where(ok, sp_pos[np.minimum(k + 1, sp_pos.size - 1)] if sp_pos.size else 0, 0)
    ok &= s1 > starts
    bi, ok_i = _digits(raw, s1 + 1, s2)
    bj, ok_j = _digits(raw, s2 + 1, ends)
    ok &= ok_i & ok_j & (bi < 2**31) & (bj < 2**32)  # codes: bi << 32 | bj
    codes: dict[str, list[np.ndarray]] = {}
    if ok.any():
        tid, times = _time_ids(raw, starts[ok], s1[ok])
        code = _code(bi[ok], bj[ok])
        order = np.argsort(tid, kind="stable")
        bounds = np.searchsorted(tid[order], np.arange(len(times) + 1))
        for k_, t in enumerate(times):
            codes[t] = [code[order[bounds[k_] : bounds[k_ + 1]]]]
    if not ok.all():  # the odd lines, the slow way
        odd = "".join(body[a : e + 1] for a, e in zip(starts[~ok], ends[~ok], strict=True))
        for t, b_i, b_j in parse_ledger(odd):
            if not (0 <= b_i < 2**31 and 0 <= b_j < 2**32):
                continue  # not a block (the writer never wrote it)
            codes.setdefault(t, []).append(np.array([(b_i << 32) | b_j], np.int64))
    return DoneBlocks({t: np.concatenate(c) for t, c in codes.items()})


class TileLedger:
    """The blocks of a store already written, keyed by (time ISO, block row, block col)."""

    def __init__(self, store: str | Path) -> None:
        self.store = Path(store)
        self.path = self.store / LEDGER_FILE
        legacy = self.store / LEGACY_LEDGER_FILE
        if not self.path.exists() and legacy.is_file():
            self.path = legacy  # a store written before, not yet moved (store.ensure_sidecar)

    def done(self) -> DoneBlocks:
        """The blocks written so far (a set of keys; ``DoneBlocks.missing`` for a row)."""
        if not self.path.exists():
            return DoneBlocks()
        return parse_ledger_blocks(self.path.read_text())

    def record(self, keys: Iterable[BlockKey]) -> int:
        """Append ``keys`` durably; returns how many were written."""
        lines = "".join(f"{t} {int(bi)} {int(bj)}\n" for t, bi, bj in keys)
        if not lines:
            return 0
        if not self.path.parent.is_dir():
            ensure_sidecar(self.store)
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
