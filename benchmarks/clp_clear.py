"""Clear pixels of the real BioMassters chip by the cube's cloud rule, with and without CLP.

    .venv/bin/python benchmarks/clp_clear.py [--shared ../shared/data]

Ingests the sample as ``make demo-real`` does (``catalog.sets.biomassters_manifest``) into a
temporary folder, reads each month's S2 with the cube's windowed reader and applies the cube's
cloud and shadow test (``build.clear_mask``) under demo-real's settings
(``jobs/configs/real.yaml`` and the set's ``cube.shadow_brightness=0.008``): once without the
``CLP`` asset (the brightness test, what the cube did before it read CLP) and once with it.
Prints per month the % of pixels clear and the % CLP calls cloud (before dilation).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from sar2opt.catalog import sets
    from sar2opt.catalog.ingest import ingest
    from sar2opt.config import load_config
    from sar2opt.cube.build import clear_mask
    from sar2opt.cube.clean import clp_cloud
    from sar2opt.cube.window_load import read_clp, read_optical
    from sar2opt.grid import GridSpec

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    args = p.parse_args()
    cfg = load_config(REPO / "jobs/configs/real.yaml", ["cube.shadow_brightness=0.008"])
    src = args.shared / "biomassters_sample"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "catalog"
        items = ingest(
            src, sets.write_manifest(sets.biomassters_manifest(src), out / "m.yaml"), out
        )
        s2 = sorted(
            (it for it in items if it["collection"] == "sentinel-2-l2a"),
            key=lambda it: it["properties"]["datetime"],
        )
        props = s2[0]["properties"]  # the ingest's grid: every item is on it
        grid = GridSpec(props["proj:epsg"], cfg.cube.res_m, tuple(props["proj:bbox"]))
        bands = list(cfg.catalog.opt_bands)
        opt = read_optical(s2, grid, bands)
        clp = read_clp(s2, grid)
        without = clear_mask(opt, bands, cfg.cube)
        with_clp = clear_mask(opt, bands, cfg.cube, clp=clp)
    h, w = grid.shape
    print(f"BioMassters chip {h} x {w} px, clouds dilated {cfg.cube.cloud_dilate_px} px")
    print("month    CLP>50   clear without CLP   clear with CLP")
    for it, c, a, b in zip(s2, clp, without, with_clp, strict=True):
        month = it["properties"]["datetime"][:7]
        cloud = 100 * clp_cloud(c).mean()
        print(f"{month}  {cloud:6.1f} %  {100 * a.mean():14.1f} %  {100 * b.mean():13.1f} %")
    print(
        f"all      {100 * clp_cloud(clp).mean():6.1f} %  {100 * without.mean():14.1f} %  "
        f"{100 * with_clp.mean():13.1f} %"
    )


if __name__ == "__main__":
    main()
