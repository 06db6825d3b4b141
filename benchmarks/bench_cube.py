"""Cube build throughput against plain rasterio reads and odc-stac, on the synthetic scene.

    .venv/bin/python benchmarks/bench_cube.py [--size-km 5.12] [--tile-px 512]

Generates a synthetic scene (``generate_scene``), serves it as a STAC API (``CatalogServer``)
and times, on the same grid and the same items:

1. ``rasterio``: a plain windowed read of every COG window the cube needs (S1 vv/vh, S2
   bands), converted to float32: the I/O floor.
2. ``odc-stac``: ``odc.stac.load`` of the same items onto the same GeoBox (no cleaning, no
   pairing), when ``odc-stac`` is installed (``pip install odc-stac``).
3. ``sar2opt``: the tiled build (``build_tiled``: load, dB, cloud mask, pairing, Zarr write),
   serial, and the in-memory ``build_cube`` on one grid.

MB/s counts float32 pixels: read (1, 2) or written to the cube (3). The readers deliver one
plane per item and asset; the cube one plane per S1 date and band, so both sizes are shown.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

from sar2opt.catalog.server import CatalogServer
from sar2opt.catalog.synthetic import generate_scene, scene_grid
from sar2opt.config import CatalogSpec, CubeSpec
from sar2opt.cube.build import build_cube, cube_bands, search_inputs
from sar2opt.cube.tiled_build import build_tiled
from sar2opt.grid import GridSpec, lonlat_bounds
from sar2opt.profiles import prepare_items, profile_for


def _row(name: str, mb: float, seconds: float, note: str) -> str:
    return f"  {name:<28} {mb:9.1f} MB {seconds:8.2f} s {mb / seconds:9.1f} MB/s   {note}"


def read_rasterio(items_assets: list[tuple[dict, tuple[str, ...]]], grid: GridSpec) -> int:
    """Windowed reads of the grid's bounds from every asset (reprojection-free: same CRS)."""
    import rasterio
    from rasterio.windows import from_bounds

    nbytes = 0
    for item, assets in items_assets:
        for a in assets:
            with rasterio.open(item["assets"][a]["href"]) as src:
                win = from_bounds(*grid.bounds, transform=src.transform)
                arr = src.read(1, window=win, boundless=True, fill_value=0).astype("float32")
                nbytes += arr.nbytes
    return nbytes


def read_odc(items_assets: list[tuple[dict, tuple[str, ...]]], grid: GridSpec) -> int:
    """``odc.stac.load`` per collection onto the grid's GeoBox, one plane per item."""
    import pystac
    from odc.geo.geobox import GeoBox
    from odc.stac import load

    gbox = GeoBox(grid.shape, grid.transform, grid.crs)
    nbytes = 0
    by_assets: dict[tuple[str, ...], list] = {}
    for item, assets in items_assets:
        # no links: pystac would resolve local hrefs against the API's self link
        by_assets.setdefault(assets, []).append(pystac.Item.from_dict({**item, "links": []}))
    for assets, items in by_assets.items():
        ds = load(
            items,
            bands=list(assets),
            geobox=gbox,
            dtype="float32",
            groupby="id",
            chunks={"x": 512, "y": 512},
        ).compute()
        nbytes += sum(int(ds[b].nbytes) for b in assets)
    return nbytes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-km", type=float, default=5.12)
    p.add_argument("--tile-px", type=int, default=256)
    p.add_argument("--n-s1", type=int, default=4)
    p.add_argument("--n-s2", type=int, default=8)
    p.add_argument("--workdir", help="keep files here (default: a temporary directory)")
    args = p.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-cube-"))
    catalog_dir = work / "catalog"
    t0 = time.perf_counter()
    if not (catalog_dir / "items.parquet").exists():
        generate_scene(catalog_dir, size_km=args.size_km, n_s1=args.n_s1, n_s2=args.n_s2)
    print(
        f"scene: {args.size_km} km, {args.n_s1} S1 + {args.n_s2} S2 dates "
        f"({time.perf_counter() - t0:.0f} s to generate or find) in {work}"
    )
    from shapely.geometry import box

    # the AOI: the scene's lon/lat footprint, 200 m inside its edges
    aoi = box(*lonlat_bounds(scene_grid(args.size_km))).buffer(-0.002)
    catalog = CatalogSpec(sar_bands=("vv", "vh"), opt_bands=("B02", "B03", "B04", "B08"))
    spec = CubeSpec(tile_px=args.tile_px, chunk_px=min(args.tile_px, 512))
    dates = ("2023-07-01", "2023-08-31")
    with CatalogServer(catalog_dir) as server:
        catalog = dataclasses.replace(catalog, stac_url=server.url)
        inputs = search_inputs(aoi, *dates, catalog=catalog, spec=spec)
        s1p = profile_for(server.url, catalog.s1_collection)
        s2p = profile_for(server.url, catalog.s2_collection)
        s1 = prepare_items([it for g in inputs.s1_groups for it in g], s1p, catalog.sar_bands)
        s2 = prepare_items(list(inputs.s2_items), s2p, catalog.opt_bands)
        jobs = [(it, catalog.sar_bands) for it in s1] + [(it, catalog.opt_bands) for it in s2]
        from sar2opt.aoi import grid_for_aoi

        grid = grid_for_aoi(aoi, spec.res_m, spec.epsg)
        planes = sum(len(a) for _, a in jobs)
        print(
            f"grid {grid.height} x {grid.width} px; {len(s1)} S1 + {len(s2)} S2 items; "
            f"readers: {planes} planes; cube: {len(inputs.times)} x "
            f"{len(cube_bands(catalog, spec))} planes"
        )
        print(f"  {'':<28} {'size':>12} {'time':>10} {'throughput':>14}")

        read_rasterio(jobs[:1], grid)  # warm the import and GDAL
        t = time.perf_counter()
        nbytes = read_rasterio(jobs, grid)
        print(_row("rasterio windows", nbytes / 1e6, time.perf_counter() - t, "read, float32"))

        try:
            import odc.stac  # noqa: F401
        except ImportError:
            print("  odc-stac: not installed (pip install odc-stac); compared with rasterio only")
        else:
            read_odc(jobs[:1], grid)
            t = time.perf_counter()
            nbytes = read_odc(jobs, grid)
            print(_row("odc-stac load", nbytes / 1e6, time.perf_counter() - t, "read, float32"))

        out = work / "cube.zarr"
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        res = build_tiled(aoi, *dates, catalog=catalog, spec=spec, out=out, log=lambda *_: None)
        dt = time.perf_counter() - t
        nb = len(cube_bands(catalog, spec))
        cube_mb = len(inputs.times) * nb * grid.height * grid.width * 4 / 1e6
        print(
            _row(
                f"sar2opt tiled ({args.tile_px} px)",
                cube_mb,
                dt,
                f"written, {res.tiles_total} tiles, search + clean + pair + Zarr",
            )
        )

        t = time.perf_counter()
        ds = build_cube(aoi, *dates, catalog=catalog, spec=spec, log=lambda *_: None)
        dt = time.perf_counter() - t
        print(_row("sar2opt build_cube", ds.cube.nbytes / 1e6, dt, "in memory, not written"))
        tiled = xr.open_zarr(out).cube.values
        same = np.array_equal(ds.cube.values, tiled, equal_nan=True)
        print(f"  tiled cube == in-memory cube: {same}")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
