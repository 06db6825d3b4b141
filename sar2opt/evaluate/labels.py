"""Regions to score apart: classes of a label raster warped onto the cube's grid, and slope
classes from the cube's DEM.

A label raster (GeoTIFF, or a georeferenced netCDF variable: ``NETCDF:file.nc:var``) is
warped onto the cube's ``GridSpec`` through its own georeference, nearest neighbour, so a
class never blends into another. Two real label sets carry no georeference and get the grid
their images were ingested on: a MultiEarth label (``Deforestation_<lon>_<lat>_<date>.tiff``)
the patch grid its name gives (``catalog.multiearth.patch_grid``), a BioMassters biomass map
(``<chip>_agbm.tif``) the chip's made-up grid (``catalog.sets.BIOMASSTERS_GRID``). Any other
file without one is refused: its pixels could lie anywhere.

Continuous labels (biomass in t/ha) become classes through bin edges: ``[e0, e1)``, ...,
``>= en``; values below ``e0`` or NaN / nodata have no class (-1).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sar2opt.grid import GridSpec

#: Slope classes (degrees) of the per-terrain scores: name -> [lo, hi).
SLOPE_CLASSES_DEG = {
    "flat <2°": (0.0, 2.0),
    "gentle 2-10°": (2.0, 10.0),
    "steep >10°": (10.0, 91.0),
}
_MULTIEARTH = re.compile(r"^[A-Za-z]+_(?P<lon>-?\d+(?:\.\d+)?)_(?P<lat>-?\d+(?:\.\d+)?)_\d{4}_")
_BIOMASSTERS = re.compile(r"^[0-9a-f]+_agbm\.tiff?$")


@dataclass(frozen=True)
class LabelMap:
    """``classes`` (H, W) int16 on the cube's grid (-1: no label), ``names`` per class code,
    ``source``: how the raster was placed (for the report)."""

    classes: np.ndarray
    names: dict[int, str]
    source: str

    def regions(self) -> dict[str, np.ndarray]:
        """{"class NAME": (H, W) bool} for every class present on the grid."""
        return {f"class {n}": self.classes == k for k, n in self.names.items()}


def _read(path: str) -> tuple[np.ndarray, object, object, float | None, str]:
    """(band 1 as float64, transform or None, crs or None, nodata, what was read)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            if src.count == 0 and src.subdatasets:
                # a netCDF with several variables: the first one, named in the report
                return _read(src.subdatasets[0])
            a = src.read(1).astype("float64")
            geo = src.crs is not None and not src.transform.is_identity
            t, crs = (src.transform, src.crs) if geo else (None, None)
            return a, t, crs, src.nodata, path


def source_grid(path: str | Path, shape: tuple[int, int]) -> tuple[GridSpec, str]:
    """The grid of a label file without georeference, from the real sets' rules (module
    doc); ValueError for any other file."""
    name = Path(str(path)).name
    m = _MULTIEARTH.match(name)
    if m and shape[0] == shape[1]:
        from sar2opt.catalog.multiearth import patch_grid

        grid = patch_grid(float(m.group("lon")), float(m.group("lat")), px=shape[0])
        return grid, f"no georeference: the MultiEarth patch grid of its name ({grid})"
    if _BIOMASSTERS.match(name):
        from sar2opt.catalog.sets import BIOMASSTERS_GRID as g

        res, x0, y1 = g["res_m"], g["x_min"], g["y_max"]
        grid = GridSpec(g["epsg"], res, (x0, y1 - shape[0] * res, x0 + shape[1] * res, y1))
        return grid, f"no georeference: the BioMassters chip grid of the ingest ({grid})"
    raise ValueError(
        f"{name} has no georeference and is not a MultiEarth or BioMassters label: "
        "cannot place it on the cube's grid (write its CRS and transform into the file)"
    )


def bin_names(edges: Sequence[float]) -> dict[int, str]:
    """Class names of bin ``edges``: ``[e0, e1)`` ..., ``>= en``."""
    e = [f"{x:g}" for x in edges]
    names = {i: f"[{e[i]}, {e[i + 1]})" for i in range(len(e) - 1)}
    return names | {len(e) - 1: f">= {e[-1]}"}


def load_labels(path: str | Path, grid: GridSpec, bins: Sequence[float] | None = None) -> LabelMap:
    """The label raster at ``path`` on ``grid`` (module doc); ValueError when it cannot be
    placed, the bin edges are not increasing, or no labelled pixel falls on the grid."""
    from rasterio.warp import Resampling

    from sar2opt.catalog.ingest import warp_array

    if not str(path).upper().startswith("NETCDF:") and not Path(path).is_file():
        raise ValueError(f"label file not found: {path}")
    a, transform, crs, nodata, what = _read(str(path))
    if nodata is not None and np.isfinite(nodata):
        a = np.where(a == nodata, np.nan, a)
    if transform is None:
        src, how = source_grid(path, a.shape)
        transform, crs = src.transform, src.crs
    else:
        how = f"warped through its georeference ({crs})"
    if what != str(path):
        how += f"; variable {what}"
    out = warp_array(a, transform, crs, grid, Resampling.nearest, dtype="float64")
    if not np.isfinite(out).any():
        raise ValueError(
            f"{Path(str(path)).name}: no labelled pixel falls on the cube's grid {grid} "
            f"(label {how})"
        )
    classes = np.full(grid.shape, -1, "int16")
    ok = np.isfinite(out)
    if bins:
        edges = np.asarray(bins, "float64")
        if edges.size < 1 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"--label-bins must increase, got {list(bins)}")
        k = np.digitize(out[ok], edges) - 1  # -1: below the first edge
        classes[ok] = k
        names = bin_names(edges)
    else:
        if np.any(out[ok] != np.round(out[ok])) or np.unique(out[ok]).size > 64:
            raise ValueError(f"{Path(str(path)).name} holds continuous values: give --label-bins")
        values = np.unique(out[ok]).astype(int)
        for i, v in enumerate(values):
            classes[ok & (out == v)] = i
        names = {i: f"{v}" for i, v in enumerate(values)}
    present = set(np.unique(classes[classes >= 0]).tolist())
    names = {k: n for k, n in names.items() if k in present}
    return LabelMap(classes, names, how)


def slope_regions(dem_m: np.ndarray, res_m: float) -> dict[str, np.ndarray]:
    """{"slope flat <2°" ...: (H, W) bool} from a north-up DEM in metres
    (``cube.clean_dem.slope_aspect``), on ``SLOPE_CLASSES_DEG``; a pixel whose slope is
    not finite (DEM gap) is in none."""
    from sar2opt.cube.clean_dem import slope_aspect

    slope = slope_aspect(dem_m, res_m)[0]
    slope = np.where(np.isfinite(dem_m), slope, np.nan)  # the gradient skips the pixel itself
    return {f"slope {n}": (slope >= lo) & (slope < hi) for n, (lo, hi) in SLOPE_CLASSES_DEG.items()}


def static_dem(dem: np.ndarray) -> np.ndarray:
    """(H, W) DEM from a scene's (T, 1, H, W) DEM band: the first finite value per pixel over
    dates (the DEM does not change; a date may miss it)."""
    d = np.asarray(dem, "float64")[:, 0]
    ok = np.isfinite(d)
    first = ok.argmax(axis=0)
    out = np.take_along_axis(d, first[None], axis=0)[0]
    return np.where(ok.any(axis=0), out, np.nan)
