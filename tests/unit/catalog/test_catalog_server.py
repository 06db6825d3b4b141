"""The rustac STAC API server: real searches with pystac-client, clean start and stop."""

from __future__ import annotations

import os
import socket
import time

import pystac_client
import pytest

from sar2opt.catalog.server import CatalogServer
from sar2opt.catalog.synthetic import generate_scene
from sar2opt.cli import main
from sar2opt.errors import CatalogError


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    out = tmp_path_factory.mktemp("cat")
    items = generate_scene(out, seed=1, size_km=0.64, n_s1=3, n_s2=4)
    return out, items


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_search_by_bbox_and_datetime(catalog):
    out, items = catalog
    bbox = items[0]["bbox"]
    with CatalogServer(out) as server:
        assert server.url.startswith("http://127.0.0.1:")
        client = pystac_client.Client.open(server.url)
        s2 = client.search(
            collections=["sentinel-2-l2a"], bbox=bbox, datetime="2023-07-05/2023-07-16"
        )
        assert sorted(i.id for i in s2.items()) == [
            "S2A_MSIL2A_SYNTH_20230708T140000",
            "S2B_MSIL2A_SYNTH_20230713T140000",
        ]
        s1 = client.search(
            collections=["sentinel-1-rtc"], bbox=bbox, datetime="2023-07-01/2023-07-31"
        )
        assert [i.id for i in s1.items()] == [
            "S1A_IW_SYNTH_20230701T091500",
            "S1A_IW_SYNTH_20230713T091500",
            "S1A_IW_SYNTH_20230725T091500",
        ]
        # POST paging (limit 2 -> several pages) returns everything once; raw dicts keep proj:epsg.
        dicts = list(client.search(collections=["sentinel-2-l2a"], limit=2).items_as_dicts())
        assert len(dicts) == 4 and len({d["id"] for d in dicts}) == 4
        assert dicts[0]["properties"]["proj:epsg"] == 32721
        far = client.search(collections=["sentinel-1-rtc"], bbox=[10.0, 10.0, 10.1, 10.1])
        assert list(far.items()) == []
        pid = server.pid
    assert pid is not None and _gone(pid)
    assert not server.running


def test_missing_catalog_raises(tmp_path):
    with pytest.raises(CatalogError, match="no catalog"):
        CatalogServer(tmp_path / "nowhere").start()


def test_corrupt_catalog_raises_with_stderr(tmp_path):
    (tmp_path / "items.parquet").write_bytes(b"this is not parquet")
    server = CatalogServer(tmp_path, start_timeout_s=20)
    with pytest.raises(CatalogError, match="exited"):
        server.start()
    assert not server.running


def test_busy_port_raises(catalog):
    out, _ = catalog
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(CatalogError):
            CatalogServer(out, port=port, start_timeout_s=10).start()
        assert time.monotonic() - t0 < 10


def test_cli_user_errors_exit_2(tmp_path, capsys):
    assert main(["catalog", "serve", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no catalog") and err.count("\n") == 1
    assert main(["catalog", "multiearth", str(tmp_path), "--out", str(tmp_path / "o")]) == 2


def test_cli_synth(tmp_path, capsys):
    assert (
        main(["catalog", "synth", "--out", str(tmp_path), "--seed", "2", "--size-km", "0.64"]) == 0
    )
    assert "13 items" in capsys.readouterr().out  # 4 S1 + 8 S2 + 1 DEM
    assert (tmp_path / "items.parquet").is_file()
