"""Look at a mosaic with sar2opt.analysis: a greenness series, a polygon mean, change, PNGs.

    python examples/analysis.py out/demo/mosaic.zarr --out out/analysis

Works on per-acquisition and period mosaics alike (a time step is a pass or a period). Uses
NDVI when the mosaic has NIR (B08), else the RGB green-leaf index (GLI), e.g. for the
MultiEarth sample's B02-B04. Pixels the model was unsure of are masked; where the store says
which evidence made each pixel (``source``), each time step's mix is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import xarray as xr
from shapely.geometry import box

from sar2opt import analysis as an
from sar2opt.infer.store import UNCERTAINTY_VAR


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mosaic", type=Path)
    ap.add_argument("--out", type=Path, default=Path("out/analysis"))
    args = ap.parse_args(argv)

    ds = xr.open_zarr(args.mosaic, consolidated=False)
    for day, mix in an.evidence_mix(ds):  # what each time step is made of
        print(f"{day}: " + ", ".join(f"{m} {f:.0%}" for m, f in mix.items()))
    opt = an.optical(ds)
    if an.quality_layer(ds, UNCERTAINTY_VAR) is not None:
        opt = an.masked(ds, max_uncertainty=0.05)  # drop pixels the model was unsure of
    name = "ndvi" if "B08" in [str(b) for b in opt.band.values] else "gli"
    idx = an.spectral_index(opt, name)

    xc, yc = float(idx.x.mean()), float(idx.y.mean())
    series = an.at_point(idx, x=xc, y=yc)
    print(f"{name} at the centre ({xc:.0f}, {yc:.0f}):")
    for t, v in zip(series.time.values, series.values, strict=True):
        print(f"  {str(t)[:10]}  {v:.3f}")

    half = 0.25 * float(idx.x.max() - idx.x.min())
    poly = box(xc - half, yc - half, xc + half, yc + half)  # central quarter, grid CRS
    mean = an.in_polygon(idx, poly, crs=None).compute()
    print(f"mean {name} over the central box: " + ", ".join(f"{v:.3f}" for v in mean.values))

    t0, t1 = str(idx.time.values[0])[:10], str(idx.time.values[-1])[:10]
    lost = an.drop_mask(idx, t0, t1, min_drop=0.1)
    print(f"{name} fell by >= 0.1 from {t0} to {t1} on {int(lost.sum())} of {lost.size} pixels")

    args.out.mkdir(parents=True, exist_ok=True)
    for p in (
        an.quicklook(opt.isel(time=-1), args.out / "rgb_last.png"),
        an.quicklook(an.change(idx, t0, t1), args.out / f"{name}_change.png", cmap="RdYlGn"),
    ):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
