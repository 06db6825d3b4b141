"""Serve a local ``items.parquet`` as a real STAC API (``rustac serve``), so the pipeline searches
local data exactly as it searches Planetary Computer: pystac-client, bbox + datetime, POST paging.

DuckDB mode stays off (``--use-duckdb false``): it downloads a DuckDB extension at start-up and
fails offline. The in-memory backend loads every item at start, which is fine for local catalogs.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from sar2opt.errors import CatalogError


def find_rustac() -> str:
    """The ``rustac`` CLI of this environment (next to the interpreter), else the one on PATH."""
    for name in ("rustac", "rustac.exe"):
        cand = Path(sys.executable).parent / name
        if cand.is_file():
            return str(cand)
    found = shutil.which("rustac")
    if found is None:
        raise CatalogError("the rustac CLI is not installed (pip install rustac)")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class CatalogServer:
    """``rustac serve`` on ``catalog_dir/items.parquet`` at ``http://127.0.0.1:PORT``.

    Use as a context manager, or ``start()``/``stop()``. ``port=None`` picks a free port.
    """

    host = "127.0.0.1"

    def __init__(
        self, catalog_dir: str | Path, port: int | None = None, start_timeout_s: float = 30.0
    ) -> None:
        self.catalog_dir = Path(catalog_dir)
        self.parquet = self.catalog_dir / "items.parquet"
        self.port = int(port) if port is not None else free_port(self.host)
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen | None = None
        self._log: tempfile._TemporaryFileWrapper | None = None  # type: ignore[type-arg]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _stderr(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace").strip()
        return text[-4000:]

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/", timeout=2.0) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def start(self) -> CatalogServer:
        """Start the server and wait until ``GET /`` answers 200.

        Raises ``CatalogError`` (with the server's stderr) if the catalog is missing, the process
        dies, or it does not answer within ``start_timeout_s``.
        """
        if self.running:
            return self
        if not self.parquet.is_file():
            raise CatalogError(
                f"no catalog at {self.parquet}: run `sar2opt catalog synth --out DIR` "
                "or `sar2opt catalog multiearth SRC --out DIR` first"
            )
        cmd = [
            find_rustac(),
            "serve",
            "--use-duckdb",
            "false",
            "--create-collections",
            "--addr",
            f"{self.host}:{self.port}",
            str(self.parquet.resolve()),
        ]
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=self._log, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._stderr()
                code = self._proc.returncode
                self._cleanup()
                raise CatalogError(
                    f"rustac serve exited with code {code} for {self.parquet}: "
                    f"{err or '(no stderr)'}"
                )
            if self._answers():
                return self
            time.sleep(0.1)
        err = self._stderr()
        self.stop()
        raise CatalogError(
            f"rustac serve did not answer at {self.url} within {self.start_timeout_s:.0f} s: "
            f"{err or '(no stderr)'}"
        )

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the server and wait for it; kill it if it does not exit in ``timeout_s``."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        self._cleanup()

    def _cleanup(self) -> None:
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> CatalogServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort: never leave a server behind
        try:
            self.stop(timeout_s=1.0)
        except Exception:  # noqa: BLE001
            pass
