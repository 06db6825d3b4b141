"""Memory of a process tree for the benchmarks: PSS, so that pages shared by several Ray
processes (the object store, libraries) count once, sampled in a background thread."""

from __future__ import annotations

import os
import threading
import time


def pss_mb(pid: int | str) -> float:
    """Proportional set size (MB): shared pages (object store, libraries) split among users."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1e3
    return 0.0


def tree_pss_mb(root_pid: int) -> tuple[float, list[float]]:
    """PSS (MB) summed over ``root_pid`` and its descendants, and the PSS of each Ray worker."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    total, workers, todo = 0.0, [], [root_pid]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            pss = pss_mb(pid)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                is_worker = f.read().startswith(b"ray::")  # task/actor workers' proctitle
        except OSError:
            continue
        total += pss
        if is_worker:
            workers.append(pss)
    return total, workers


class Sampler:
    """A ``with`` block during which ``_run`` samples in a daemon thread until ``_stop``."""

    _stop: threading.Event

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


class PeakMem(Sampler):
    """Samples the driver's and the process tree's PSS in a thread; peaks after the block."""

    def __init__(self, every_s: float = 0.2) -> None:
        self.every_s, self.tree_mb, self.driver_mb = every_s, 0.0, 0.0
        self.workers, self.worker_mb = 0, 0.0  # most Ray workers alive; largest worker PSS
        self.cpu_s = 0.0  # CPU time of the sampling thread itself (to leave out of a job's)
        self._stop = threading.Event()

    def _run(self) -> None:
        c0 = time.thread_time()
        while not self._stop.is_set():
            tree, workers = tree_pss_mb(os.getpid())
            self.tree_mb = max(self.tree_mb, tree)
            self.workers = max(self.workers, len(workers))
            self.worker_mb = max([self.worker_mb, *workers])
            self.driver_mb = max(self.driver_mb, pss_mb("self"))
            self.cpu_s = time.thread_time() - c0
            self._stop.wait(self.every_s)
