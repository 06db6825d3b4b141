"""Predict optical imagery over a region from Sentinel-1: tiles on a Ray Data actor pool -> Zarr.

    python jobs/infer_region.py --aoi examples/aoi/synthetic_para.geojson \
        --checkpoint out/checkpoint --start 2023-07-01 --end 2023-08-31 --out out/mosaic.zarr

Under ``ray job submit`` the job joins the cluster named by RAY_ADDRESS; alone it starts a
local Ray. Each tile x acquisition is one row: read its SAR window (Ray task) -> predict
(actor pool, the generator loaded once per actor) -> blended into the mosaic on the driver.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from sar2opt.aoi import grid_for_aoi, load_aoi
from sar2opt.config import InferSpec, config_to_dict, load_config
from sar2opt.errors import ConfigError, Sar2OptError
from sar2opt.grid import GridSpec
from sar2opt.infer.mosaic import check_mosaic_path, sha256_file, write_mosaic
from sar2opt.infer.predictor import TilePredictor, read_tile_row
from sar2opt.infer.tiles import MULTIPLE, TileTask, accumulate, blend_weights, finalize, plan_tiles
from sar2opt.provenance import provenance


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--aoi", required=True, help="GeoJSON Polygon/MultiPolygon in lon/lat")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (holds model.pt)")
    p.add_argument("--out", required=True, help="output Zarr store")
    p.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    p.add_argument("--end", required=True, help="last date, YYYY-MM-DD")
    p.add_argument("--config", help="YAML config (see jobs/configs/)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--stac-url", help="STAC API endpoint (overrides catalog.stac_url)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return p.parse_args(argv)


def check_infer_spec(spec: InferSpec) -> None:
    """Reject tiling/actor settings that would crash or hang deep inside Ray."""
    if spec.tile_px <= 0 or spec.tile_px % MULTIPLE:
        raise ConfigError(
            f"infer.tile_px must be a positive multiple of {MULTIPLE}, got {spec.tile_px}"
        )
    if not 0 <= spec.overlap_px < spec.tile_px:
        raise ConfigError(f"infer.overlap_px must be in [0, tile_px), got {spec.overlap_px}")
    if spec.batch_size < 1 or spec.num_actors < 1:
        raise ConfigError("infer.batch_size and infer.num_actors must be >= 1")
    if spec.cpus_per_actor < 0 or spec.gpus_per_actor < 0:
        raise ConfigError("infer.cpus_per_actor and infer.gpus_per_actor must be >= 0")


def predict_tiles(
    tasks: Sequence[TileTask],
    spec: InferSpec,
    *,
    read_fn: Callable[..., dict],
    read_kwargs: dict,
    predictor_cls: type,
    predictor_kwargs: dict,
) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data pipeline: rows of tasks -> ``read_fn`` (tasks) -> ``predictor_cls`` (actors).

    Yields numpy batches with ``pred`` and the task keys as they finish (in any order).
    Needs Ray initialised. ``num_cpus`` per actor is fractional by design: on a small node
    whole-CPU actors leave no slot for the read tasks and the pipeline stalls.
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the job prints its own tiles-done line
    # Keep a worker's Sar2OptError (e.g. an unreadable asset) as the error's cause instead of
    # a bare UserCodeException, so the job can report it in one line.
    ctx.raise_original_map_exception = True
    ds = ray.data.from_items([t.to_dict() for t in tasks])
    ds = ds.map(read_fn, fn_kwargs=read_kwargs)
    ds = ds.map_batches(
        predictor_cls,
        fn_constructor_kwargs=predictor_kwargs,
        batch_size=spec.batch_size,
        compute=ray.data.ActorPoolStrategy(size=spec.num_actors),
        num_cpus=spec.cpus_per_actor,
        num_gpus=spec.gpus_per_actor or None,
    )
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")


def blend_batches(
    batches: Iterator[dict[str, np.ndarray]],
    shape: tuple[int, int, int, int],
    overlap_px: int,
    total: int,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Blend streamed tile predictions into a (time, band, y, x) float32 mosaic."""
    acc = np.zeros(shape, dtype=np.float32)
    wsum = np.zeros(shape, dtype=np.float32)
    weights: dict[tuple[int, int], np.ndarray] = {}
    done = 0
    for batch in batches:
        for i in range(len(batch["pred"])):
            pred = batch["pred"][i]
            hw = pred.shape[-2:]
            if hw not in weights:
                weights[hw] = blend_weights(hw, overlap_px)
            t, r, c = int(batch["t"][i]), int(batch["row"][i]), int(batch["col"][i])
            accumulate(acc[t], wsum[t], pred, weights[hw], r, c)
            done += 1
        if progress:
            progress(done, total)
    if done != total:
        raise RuntimeError(f"pipeline returned {done} tiles, expected {total}")
    return finalize(acc, wsum)


def _user_error(exc: BaseException) -> Sar2OptError | None:
    """The Sar2OptError behind a Ray wrapper (worker errors arrive as causes/subclasses)."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        cause = getattr(e, "cause", None)  # RayTaskError: the worker's original exception
        if isinstance(cause, BaseException) and id(cause) not in seen:
            e = cause
            continue
        if isinstance(e, Sar2OptError):
            return e
        e = e.__cause__ or e.__context__
    return None


def _one_line(err: BaseException) -> str:
    """First line of the message: Ray appends retry notes to errors raised in workers."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _init_ray() -> bool:
    """Join RAY_ADDRESS's cluster if set, else start a local one; True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        ray.init(include_dashboard=False)
    return True


def main(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    started_ray = False
    try:
        cfg = load_config(args.config, args.set)
        if args.stac_url:
            cfg = dataclasses.replace(
                cfg, catalog=dataclasses.replace(cfg.catalog, stac_url=args.stac_url)
            )
        check_infer_spec(cfg.infer)
        out = check_mosaic_path(args.out, args.overwrite)
        aoi = load_aoi(args.aoi)

        from sar2opt.train.checkpoint import MODEL_FILE, load_generator

        _, meta = load_generator(args.checkpoint)  # fail fast on a bad checkpoint
        in_bands, out_bands = list(meta["in_bands"]), list(meta["out_bands"])
        grid: GridSpec = grid_for_aoi(aoi, cfg.cube.res_m, cfg.cube.epsg)

        from sar2opt.cube.load import group_acquisitions
        from sar2opt.stac import search_s1

        items = search_s1(cfg.catalog, aoi, args.start, args.end)
        groups = group_acquisitions(items)
        times = [iso for iso, _ in groups]
        tiles = plan_tiles(grid, cfg.infer.tile_px, cfg.infer.overlap_px, aoi)
        tasks = [tile.task(t, iso) for t, iso in enumerate(times) for tile in tiles]
        print(
            f"infer: {grid}, {len(times)} acquisitions x {len(tiles)} tiles = {len(tasks)} tasks",
            flush=True,
        )

        started_ray = _init_ray()
        device = "cuda" if cfg.infer.gpus_per_actor > 0 else "cpu"
        batches = predict_tiles(
            tasks,
            cfg.infer,
            read_fn=read_tile_row,
            read_kwargs={
                "items_by_time": [members for _, members in groups],
                "grid": grid.to_dict(),
                "bands": in_bands,
            },
            predictor_cls=TilePredictor,
            predictor_kwargs={
                "checkpoint_dir": str(Path(args.checkpoint).resolve()),
                "device": device,
            },
        )
        every = max(1, len(tasks) // 20)
        last = [0]

        def progress(done: int, total: int) -> None:
            if done - last[0] >= every or done == total:
                last[0] = done
                print(f"infer: tiles {done}/{total}  ({time.monotonic() - t0:.0f} s)", flush=True)

        shape = (len(times), len(out_bands), *grid.shape)
        data = blend_batches(batches, shape, cfg.infer.overlap_px, len(tasks), progress)

        attrs = provenance("infer")
        attrs.update(
            {
                "model": meta.get("model"),
                "checkpoint": str(Path(args.checkpoint).resolve()),
                "checkpoint_sha256": sha256_file(Path(args.checkpoint) / MODEL_FILE),
                "checkpoint_git_sha": meta.get("git_sha"),
                "config": config_to_dict(cfg),
                "in_bands": in_bands,
                "s1_item_ids": [[it["id"] for it in members] for _, members in groups],
                "aoi_bounds_lonlat": list(aoi.bounds),
                "start": args.start,
                "end": args.end,
            }
        )
        path = write_mosaic(
            out,
            data,
            grid,
            times,
            out_bands,
            attrs,
            tile_px=cfg.infer.tile_px,
            overwrite=args.overwrite,
        )
    except Exception as e:  # noqa: BLE001 - Ray wraps worker errors; unwrap the user-facing ones
        err = _user_error(e)
        if err is None:
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    finite = float(np.isfinite(data).mean()) if data.size else 0.0
    print(
        f"mosaic: {path}  dims {dict(zip(('time', 'band', 'y', 'x'), data.shape, strict=True))}  "
        f"valid {finite:.1%}  ({time.monotonic() - t0:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
