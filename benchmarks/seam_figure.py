"""The seam figure of a written mosaic: the jump across block edges against inside blocks.

    .venv/bin/python benchmarks/seam_figure.py [--mosaic out/demo/mosaic.zarr ...]

Inference writes each block as the centre crop of a larger window, without blending over the
overlap (README "Wall-to-wall runs"). This prints, per store (``make demo`` writes
``out/demo/mosaic.zarr`` with the trained demo model; the README's scene-fit figure is a
per-pass mosaic of the real BioMassters chip by the ``make demo-real`` checkpoint, written
with ``--set infer.composite_max_dt_days=0``), the band-mean |difference| between neighbouring
pixels that straddle a block edge and between those inside a block
(``sar2opt.evaluate.seams``): mean, 99th percentile, pairs, and edge / inside. Only
synthesised pixels count (``source`` 2-4): a real S2 pixel of the composite has no seam to
show. Edge / inside near 1 means the centre crop leaves no visible seam.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    import xarray as xr

    from sar2opt.evaluate.seams import edge_jumps, jump_stats
    from sar2opt.infer.composite import SOURCE_CLOUD_REMOVED, SOURCE_SYNTH, SOURCE_SYNTH_PRIOR
    from sar2opt.infer.store import BLOCK_PX_ATTR, OPTICAL_VAR, SOURCE_VAR, zone_stores

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--mosaic", type=Path, action="append", help="a mosaic store (repeat for several)"
    )
    args = p.parse_args()
    synthesised = [SOURCE_SYNTH, SOURCE_SYNTH_PRIOR, SOURCE_CLOUD_REMOVED]
    print("| mosaic | block px | where | mean jump | p99 jump | pairs | edge / inside |")
    print("|---|---:|---|---:|---:|---:|---|")
    for root in args.mosaic or [REPO / "out/demo/mosaic.zarr"]:
        for store in zone_stores(root, migrate=False):
            ds = xr.open_zarr(store, consolidated=False)
            block_px = int(ds.attrs[BLOCK_PX_ATTR])
            edge, inside = [], []
            for t in range(ds.sizes["time"]):  # one time step in memory at a time
                image = ds[OPTICAL_VAR][t].values
                ok = np.isin(ds[SOURCE_VAR][t].values, synthesised)
                e, i = edge_jumps(image, ok, block_px)
                edge.append(e)
                inside.append(i)
            s_edge = jump_stats(np.concatenate(edge))
            s_in = jump_stats(np.concatenate(inside))
            name = f"{root.name}" + (f"/{store.name}" if store != root else "")
            mean_ratio, p99_ratio = s_edge["mean"] / s_in["mean"], s_edge["p99"] / s_in["p99"]
            for where, s in (("block edges", s_edge), ("inside blocks", s_in)):
                ratio = f"mean {mean_ratio:.2f}, p99 {p99_ratio:.2f}" if s is s_edge else ""
                print(
                    f"| {name} | {block_px} | {where} | {s['mean']:.5f} | {s['p99']:.5f} | "
                    f"{s['n']} | {ratio} |"
                )


if __name__ == "__main__":
    main()
