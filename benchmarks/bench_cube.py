"""Cube build throughput against plain rasterio reads and odc-stac, on the synthetic scene.

    .venv/bin/python benchmarks/bench_cube.py [--size-km 20.48] [--tile-px 1024] [--repeat 3]
    pip install odc-stac==0.5.3     # for its row (otherwise skipped)

Generates a synthetic scene (``generate_scene``, 4 S1 + 8 S2 dates), serves it as a STAC API
(``CatalogServer``) and times, on the cube's grid and the same items, in one process:

1. ``rasterio windows``: a plain windowed read (float32) of every tile's read window (tile +
   ``cloud_dilate_px`` halo) from every S1 and S2 asset the cube needs: the I/O floor of the
   tiled build, one thread.
2. ``odc-stac load + Zarr``: ``odc.stac.load`` of the same items onto the same GeoBox in
   ``tile_px`` chunks, written to Zarr with the cube's chunks and codec (no cleaning, no
   pairing): what a user gets from odc-stac.
3. ``sar2opt tiled``: ``build_tiled`` (serial: search, load, dB, scale, cloud mask, pairing,
   Zarr write), once with the stackstac reader (one dask graph per tile: the old path) and
   once with the windowed COG reader (the default), and with zarrs' Rust codec pipeline
   when ``zarrs`` is installed.
4. The cube's Zarr write alone (``zarr`` vs ``zarrs``, compressed or not): the cost per object.

Every row is scored on one yardstick, the float32 input planes on the cube grid (items x
bands x pixels), so MB/s ratios are ratios of times. With ``--repeat`` the rows run in turn
that many times; times are medians and the ratios are shown per run and as their median.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from sar2opt.catalog.server import CatalogServer
from sar2opt.catalog.synthetic import generate_scene, scene_grid
from sar2opt.config import CatalogSpec, CubeSpec
from sar2opt.cube.build import cube_bands, search_inputs
from sar2opt.cube.tiled_build import build_tiled
from sar2opt.cube.tiles import plan_zones
from sar2opt.grid import GridSpec, lonlat_bounds
from sar2opt.profiles import prepare_items, profile_for

ZARRS = "zarrs.ZarrsCodecPipeline"


def read_rasterio(jobs: list[tuple[dict, tuple[str, ...]]], windows: list[GridSpec]) -> int:
    """Plain windowed reads of each window from every asset (same CRS and pixel size)."""
    import rasterio
    from rasterio.windows import from_bounds

    nbytes = 0
    for g in windows:
        for item, assets in jobs:
            for a in assets:
                with rasterio.open(item["assets"][a]["href"]) as src:
                    win = from_bounds(*g.bounds, transform=src.transform)
                    arr = src.read(1, window=win, boundless=True, fill_value=0)
                    nbytes += arr.astype("float32").nbytes
    return nbytes


def load_odc_to_zarr(
    jobs: list[tuple[dict, tuple[str, ...]]], grid: GridSpec, spec: CubeSpec, out: Path
) -> int:
    """``odc.stac.load`` per collection onto the grid's GeoBox, one plane per item, written to
    Zarr with the cube's chunks (one dask run per collection: reads and writes overlap)."""
    import pystac
    from odc.geo.geobox import GeoBox
    from odc.stac import load

    gbox = GeoBox(grid.shape, grid.transform, grid.crs)
    by_assets: dict[tuple[str, ...], list] = {}
    for item, assets in jobs:
        # no links: pystac would resolve local hrefs against the API's self link
        by_assets.setdefault(assets, []).append(pystac.Item.from_dict({**item, "links": []}))
    nbytes = 0
    for k, (assets, items) in enumerate(by_assets.items()):
        ds = load(
            items,
            bands=list(assets),
            geobox=gbox,
            dtype="float32",
            groupby="id",
            chunks={"x": spec.tile_px, "y": spec.tile_px},
        )
        enc = {b: {"chunks": (1, spec.chunk_px, spec.chunk_px)} for b in assets}
        ds = ds.drop_vars([c for c in ds.coords if c not in ("time", "x", "y")])
        ds.to_zarr(out / f"{k}.zarr", mode="w", zarr_format=3, consolidated=False, encoding=enc)
        nbytes += sum(int(ds[b].nbytes) for b in assets)
    return nbytes


def zarr_write(data: np.ndarray, out: Path, chunk_px: int, pipeline: str | None, compress: bool):
    """Seconds to write ``data`` as one (time, band, y, x) array with the cube's chunks."""
    import zarr

    cfg = {"codec_pipeline.path": pipeline} if pipeline else {}
    shutil.rmtree(out, ignore_errors=True)
    with zarr.config.set(cfg):
        kw = {} if compress else {"compressors": None}
        arr = zarr.create_array(
            out,
            shape=data.shape,
            chunks=(1, data.shape[1], chunk_px, chunk_px),
            dtype="float32",
            fill_value=np.nan,
            zarr_format=3,
            **kw,
        )
        t = time.perf_counter()
        arr[:] = data
        return time.perf_counter() - t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-km", type=float, default=20.48)
    p.add_argument("--tile-px", type=int, default=1024)
    p.add_argument("--n-s1", type=int, default=4)
    p.add_argument("--n-s2", type=int, default=8)
    p.add_argument("--repeat", type=int, default=1, help="run every row this many times")
    p.add_argument("--no-stackstac", action="store_true", help="skip the stackstac-reader row")
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

    from sar2opt.aoi import grid_for_aoi
    from sar2opt.infer import read

    # the AOI: the scene's lon/lat footprint, 200 m inside its edges
    aoi = box(*lonlat_bounds(scene_grid(args.size_km))).buffer(-0.002)
    catalog = CatalogSpec(sar_bands=("vv", "vh"), opt_bands=("B02", "B03", "B04", "B08"))
    spec = CubeSpec(tile_px=args.tile_px, chunk_px=min(args.tile_px, 512))
    dates = ("2023-07-01", "2023-08-31")
    has_odc = importlib.util.find_spec("odc.stac") is not None
    has_zarrs = importlib.util.find_spec("zarrs") is not None
    times: dict[str, list[float]] = {}
    with CatalogServer(catalog_dir) as server:
        catalog = dataclasses.replace(catalog, stac_url=server.url)
        inputs = search_inputs(aoi, *dates, catalog=catalog, spec=spec)
        s1p = profile_for(server.url, catalog.s1_collection)
        s2p = profile_for(server.url, catalog.s2_collection)
        s1 = prepare_items([it for g in inputs.s1_groups for it in g], s1p, catalog.sar_bands)
        s2 = prepare_items(list(inputs.s2_items), s2p, catalog.opt_bands)
        jobs = [(it, catalog.sar_bands) for it in s1] + [(it, catalog.opt_bands) for it in s2]
        grid = grid_for_aoi(aoi, spec.res_m, spec.epsg)
        (plan,) = plan_zones(aoi, spec)
        windows = [
            plan.zone.grid.subgrid(*plan.lattice.halo(r, c, spec.cloud_dilate_px))
            for r, c in plan.tiles
        ]
        planes = sum(len(a) for _, a in jobs)
        input_mb = planes * grid.height * grid.width * 4 / 1e6
        nb = len(cube_bands(catalog, spec))
        cube_mb = len(inputs.times) * nb * grid.height * grid.width * 4 / 1e6
        print(
            f"grid {grid.height} x {grid.width} px, {len(plan.tiles)} tiles of {args.tile_px} px "
            f"(+{spec.cloud_dilate_px} px halo); {len(s1)} S1 + {len(s2)} S2 items = {planes} "
            f"input planes ({input_mb:.1f} MB float32); cube {len(inputs.times)} x {nb} planes "
            f"({cube_mb:.1f} MB)"
        )
        read_rasterio(jobs[:1], windows[:1])  # warm the imports and GDAL
        rows: list[tuple[str, str]] = [("rasterio", "rasterio windows (floor)")]
        if has_odc:
            rows.append(("odc", "odc-stac load + Zarr"))
        if not args.no_stackstac:
            rows.append(("stackstac", "sar2opt tiled, stackstac"))
        rows.append(("windows", "sar2opt tiled, windows"))
        if has_zarrs:
            rows.append(("zarrs", "sar2opt tiled, windows+zarrs"))
        outs = {key: work / f"{key}.zarr" for key, _ in rows}
        for _ in range(args.repeat):
            for key, _ in rows:
                shutil.rmtree(outs[key], ignore_errors=True)
                read.close_all()
                t = time.perf_counter()
                if key == "rasterio":
                    read_rasterio(jobs, windows)
                elif key == "odc":
                    load_odc_to_zarr(jobs, grid, spec, outs[key])
                else:
                    import zarr

                    cfg = {"codec_pipeline.path": ZARRS} if key == "zarrs" else {}
                    with zarr.config.set(cfg):
                        build_tiled(
                            aoi,
                            *dates,
                            catalog=catalog,
                            spec=spec,
                            out=outs[key],
                            log=lambda *_: None,
                            reader="stackstac" if key == "stackstac" else "windows",
                        )
                times.setdefault(key, []).append(time.perf_counter() - t)

        print(f"\n  {'method':<30} {'time (median)':>14} {'MB/s':>8}   runs (s)")
        for key, name in rows:
            ts = times[key]
            med = statistics.median(ts)
            note = ", ".join(f"{x:.2f}" for x in ts)
            print(f"  {name:<30} {med:12.2f} s {input_mb / med:8.1f}   {note}")
        print(f"  (MB/s: the {input_mb:.1f} MB of float32 input planes on the cube grid)")

        def ratio(a: str, b: str) -> str:
            rs = [tb / ta for ta, tb in zip(times[a], times[b], strict=True)]
            runs = ", ".join(f"{r:.2f}" for r in rs)
            return f"{statistics.median(rs):.2f} (runs {runs})"

        print()
        for new in ("windows", "zarrs"):
            if new not in times:
                continue
            label = "windows" if new == "windows" else "windows+zarrs"
            if has_odc:
                print(f"  {label} / odc-stac:      {ratio(new, 'odc')}   goal >= 1")
            print(f"  {label} / rasterio floor: {ratio(new, 'rasterio')}   goal >= 0.5")
            if "stackstac" in times:
                print(f"  {label} / stackstac tiled: {ratio(new, 'stackstac')}")
        import xarray as xr

        cube = xr.open_zarr(outs["windows"]).cube.values
        for key in ("stackstac", "zarrs"):
            if key in outs and outs[key].exists():
                other = xr.open_zarr(outs[key]).cube.values
                same = np.array_equal(cube, other, equal_nan=True)
                print(f"  windows cube == {key} cube: {same}")

        # the cube's write alone: the codec's cost and zarr's cost per stored object
        n_obj = (
            len(inputs.times) * -(-grid.height // spec.chunk_px) * -(-grid.width // spec.chunk_px)
        )
        print(
            f"\n  Zarr write of the cube alone ({cube_mb:.1f} MB, {n_obj} objects of "
            f"{spec.chunk_px} px x {nb} bands), median of {max(args.repeat, 1)}:"
        )
        pipes = [("zarr-python", None)] + (
            [("zarrs " + _version("zarrs"), ZARRS)] if has_zarrs else []
        )
        for name, pipe in pipes:
            for compress in (True, False):
                ts = [
                    zarr_write(cube, work / "write.zarr", spec.chunk_px, pipe, compress)
                    for _ in range(max(args.repeat, 1))
                ]
                med = statistics.median(ts)
                codec = "zstd (default)" if compress else "uncompressed"
                print(
                    f"  {name:<16} {codec:<15} {med:6.2f} s {cube_mb / med:7.1f} MB/s "
                    f"{1e3 * med / n_obj:6.1f} ms/object"
                )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    raise SystemExit(main())
