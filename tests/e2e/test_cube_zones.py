"""An AOI across a UTM zone boundary gives one complete cube store per zone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from tests.helpers.jobs import run_job, write_json

pytestmark = pytest.mark.slow

# 2.2 km x 1.1 km straddling -54° (UTM 21S | 22S)
BBOX = (-54.01, -5.005, -53.99, -4.995)
AOI = {
    "type": "Polygon",
    "coordinates": [
        [
            [BBOX[0], BBOX[1]],
            [BBOX[2], BBOX[1]],
            [BBOX[2], BBOX[3]],
            [BBOX[0], BBOX[3]],
            [BBOX[0], BBOX[1]],
        ]
    ],
}


def test_two_zone_aoi_builds_one_store_per_zone(tmp_path):
    import rioxarray  # noqa: F401

    from sar2opt.catalog.server import CatalogServer
    from sar2opt.catalog.synthetic import generate_region

    items = generate_region(tmp_path / "catalog", BBOX, "2023-07-01", "2023-07-20")
    s1 = [it for it in items if it["collection"] == "sentinel-1-rtc"]
    assert {it["properties"]["proj:epsg"] for it in s1} == {32721, 32722}
    aoi = write_json(tmp_path / "aoi.geojson", AOI)
    out = tmp_path / "cube"
    with CatalogServer(tmp_path / "catalog") as server:
        r = run_job(
            [
                "jobs/build_cube.py",
                "--aoi",
                aoi,
                "--start",
                "2023-07-01",
                "--end",
                "2023-07-20",
                "--out",
                out,
                "--config",
                "jobs/configs/demo.yaml",
                "--stac-url",
                server.url,
                "--set",
                "cube.tile_px=128",
                "--set",
                "cube.chunk_px=128",
            ],
            timeout=600,
        )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    zones = json.loads((out / "zones.json").read_text())
    assert len(zones) == 2
    stores = sorted(out.glob("*.zarr"))
    assert [p.name for p in stores] == ["21S.zarr", "22S.zarr"]
    west_edge = {}
    for p in stores:
        cube = xr.open_zarr(p)["cube"]
        epsg = cube.rio.crs.to_epsg()
        assert p.name == f"{epsg - 32700}S.zarr"
        assert cube.dims == ("time", "band", "y", "x") and cube.sizes["time"] >= 1
        sar = cube.sel(band="vv").values
        # each zone store holds real backscatter over its own part of the AOI
        assert np.isfinite(sar).mean() > 0.3 and -30 < np.nanmedian(sar) < 0
        west_edge[epsg] = float(cube.x.min())
    # 21S's part ends at -54°, i.e. near the east edge of zone 21 (x ~ 833 km);
    # 22S's part starts at -54°, the west edge of zone 22 (x ~ 167 km)
    assert west_edge[32721] > 800_000 and west_edge[32722] < 200_000


def test_two_zone_aoi_infers_one_mosaic_store_per_zone(tmp_path, tiny_ckpt):
    import rioxarray  # noqa: F401

    from sar2opt.catalog.server import CatalogServer
    from sar2opt.catalog.synthetic import generate_region

    generate_region(tmp_path / "catalog", BBOX, "2023-07-01", "2023-07-20")
    aoi = write_json(tmp_path / "aoi.geojson", AOI)
    out = tmp_path / "mosaic"
    with CatalogServer(tmp_path / "catalog") as server:
        r = run_job(
            [
                "jobs/infer_region.py",
                "--aoi",
                aoi,
                "--start",
                "2023-07-01",
                "--end",
                "2023-07-20",
                "--checkpoint",
                tiny_ckpt,
                "--out",
                out,
                "--stac-url",
                server.url,
                "--config",
                "jobs/configs/demo.yaml",
                "--set",
                "infer.tta_flips=1",
                "--executor",
                "local",
            ],
            timeout=600,
        )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    stores = sorted(p for p in out.iterdir() if p.suffix == ".zarr")
    assert len(stores) == 2, [p.name for p in out.iterdir()]
    epsgs = set()
    for p in stores:
        ds = xr.open_zarr(p, consolidated=False)
        opt = ds["optical"]
        assert opt.dims == ("time", "band", "y", "x")
        epsgs.add(opt.rio.crs.to_epsg())
        assert np.isfinite(opt.values).mean() > 0.3
    assert epsgs == {32721, 32722}
