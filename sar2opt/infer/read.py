"""Fast windowed reads of STAC assets for inference: rasterio straight from the COG hrefs.

The cube builder reads through stackstac (one dask graph per call), which costs ~0.1 s per
256-px tile: more than the demo generator's forward pass. Here one read task fetches a whole
strip of blocks (one window per asset and item), with no dask graph:

* the asset's grid is on the output lattice (same CRS and pixel size, whole-pixel offset):
  a plain windowed read of the part that overlaps, NaN elsewhere — the same pixels stackstac
  gives (it warps with nearest neighbour onto the same pixel centres);
* otherwise a ``WarpedVRT`` onto the window's grid, nearest neighbour, as stackstac does.

Frames of one acquisition are mosaicked last-on-top (``stackstac.mosaic``'s default) and
linear power becomes dB as in ``sar2opt.cube.load.load_sar``. Open datasets are cached per
process (a Ray worker reads many strips of the same scenes), under a GDAL environment that
never lists directories and caches COG headers.

Aligned reads go through the COG's own internal tiles, each decoded once into a per-process
LRU (``BLOCK_CACHE_MB``): a block row's windows overlap the next row's by the model's
context, so a 256-px window on 256-px COG tiles touches two tile rows and its neighbour
below needs one of them again. GDAL's block cache does not help there (a window read that
spans several tiles decodes them straight into the output, uncached), and a masked read
decodes everything a second time for the nodata mask; together that was 4-5x the decoding
each pixel needs (deflate + floating-point predictor: ~11 ns a pixel here). Integer bands
(S2's uint16 DN) stay in their own type in the cache, NaN going in as they are copied out
(``kept_native``): twice the tiles in the same megabytes, which an SO or SC strip's several
S2 dates of 4 bands each need.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# imported here, once, not inside the readers: a Ray actor reads in several threads, and two
# threads importing ``rasterio.vrt`` at once can see it half-initialised ("cannot import name
# 'WarpedVRT'", seen in CI)
import rasterio
from affine import Affine
from rasterio.enums import MaskFlags, Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from sar2opt.config import CubeSpec
from sar2opt.errors import CatalogError
from sar2opt.grid import GridSpec
from sar2opt.profiles import CollectionProfile

#: GDAL settings for reading COGs over HTTP or from disk (stackstac's defaults, plus a cache).
GDAL_ENV: dict[str, object] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MAX_RETRY": 5,
    "GDAL_HTTP_RETRY_DELAY": 1,
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF",
    "VSI_CACHE": True,
    "VSI_CACHE_SIZE": 16 * 2**20,
    "GDAL_CACHEMAX": 64,  # MB: enough for the context rows strips share
}
#: Open datasets kept per process.
MAX_OPEN = 64
#: Decoded COG tiles kept per process (MB). Strips are ordered down columns of strips
#: (``run.strip_tasks``), so the tiles a strip shares with the next one are the last used.
BLOCK_CACHE_MB = 64
#: Relative tolerance for "same pixel size" and "whole-pixel offset".
ALIGN_TOL = 1e-6

_lock = threading.Lock()
_open: OrderedDict[str, object] = OrderedDict()
_env = None
_blocks: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()
_blocks_bytes = 0
_local = threading.local()  # per thread: how many reads it warped (``warped_reads``)


def pixel_offset(src: Affine, dst: Affine, tol: float = ALIGN_TOL) -> tuple[int, int] | None:
    """(row, col) of ``dst``'s first pixel in ``src``'s pixel grid when both grids share
    pixel size and orientation and differ by whole pixels; None when reading needs a warp."""
    if abs(src.b) > tol * abs(src.a) or abs(src.d) > tol * abs(src.e):
        return None  # rotated
    if dst.b or dst.d:
        return None
    if abs(src.a - dst.a) > tol * abs(dst.a) or abs(src.e - dst.e) > tol * abs(dst.e):
        return None
    col = (dst.c - src.c) / src.a
    row = (dst.f - src.f) / src.e
    rc, cc = round(row), round(col)
    if abs(row - rc) > tol * max(1.0, abs(row)) or abs(col - cc) > tol * max(1.0, abs(col)):
        return None
    return int(rc), int(cc)


def overlap_1d(start: int, length: int, size: int) -> tuple[int, int, int]:
    """Part of ``[start, start + length)`` inside ``[0, size)``: (src start, dst start, n)."""
    a, b = max(start, 0), min(start + length, size)
    return a, a - start, max(b - a, 0)


def mosaic_last_on_top(layers: np.ndarray) -> np.ndarray:
    """(N, ...) -> (...): per pixel the last layer's value that is not NaN (NaN if none)."""
    layers = np.asarray(layers)
    out = layers[-1].copy()
    for layer in layers[-2::-1]:
        hole = np.isnan(out)
        if not hole.any():
            break
        out[hole] = layer[hole]
    return out


def warped_reads() -> int:
    """How many ``read_asset`` calls of this thread went through a ``WarpedVRT``. An aligned
    read copies each pixel as stored, so a window cut from a larger aligned read is what a
    read of that window gives; a warped pixel may depend on the window (GDAL's approximate
    transformer), so a caller that cuts windows out of one larger read checks this did not
    move (``run.offer_clear_s2``)."""
    return getattr(_local, "warped", 0)


def _gdal_env():
    """One rasterio Env per process, entered once and kept (cheap re-use in Ray workers)."""
    global _env
    if _env is None:
        _env = rasterio.Env(**GDAL_ENV)
        _env.__enter__()
    return _env


def _dataset(href: str):
    """A cached open dataset for ``href`` (LRU of ``MAX_OPEN`` per process)."""
    ds = _open.get(href)
    if ds is not None:
        _open.move_to_end(href)
        return ds
    _gdal_env()
    try:
        ds = rasterio.open(href)
    except Exception as e:  # noqa: BLE001 - rasterio raises several types for one cause
        raise CatalogError(f"cannot open asset {href}: {str(e).splitlines()[0]}") from e
    if ds.count != 1:
        ds.close()
        raise CatalogError(f"asset {href} has {ds.count} bands; one band per asset is expected")
    _open[href] = ds
    while len(_open) > MAX_OPEN:
        _open.popitem(last=False)[1].close()
    return ds


def nodata_to_nan(ds, a: np.ndarray, window) -> np.ndarray:
    """``a`` (native dtype, read from band 1 at ``window``) as float32 with NaN where the
    band's mask says no data: what ``read(masked=True).filled(nan)`` gives, but a per-band
    nodata value is compared here instead of GDAL decoding the window again for its mask."""

    flags = set(ds.mask_flag_enums[0])
    out = a.astype(np.float32)
    if flags == {MaskFlags.all_valid}:
        return out
    if flags == {MaskFlags.nodata} and ds.nodata is not None:
        nodata = ds.nodata  # compared in the band's own type, as GDAL does
        out[np.isnan(a) if np.isnan(nodata) else a == nodata] = np.nan
        return out
    out[ds.read_masks(1, window=window) == 0] = np.nan  # internal mask or alpha band
    return out


def kept_native(ds) -> bool:
    """Whether the decoded-tile cache keeps ``ds``'s tiles in the band's own type: an integer
    band narrower than float32 whose mask is all-valid or a nodata value (NaN goes in as a
    tile is copied out, ``read_tiles``: the values ``nodata_to_nan`` gives). S2's uint16 DN
    then take half the memory of float32, so the cache holds twice the tiles of a strip's
    dates (an SO strip reads 4 bands per date: in float32 they crowded out the tile rows the
    next strip down the column shares)."""
    dt = np.dtype(ds.dtypes[0])
    if dt.kind not in "ui" or dt.itemsize >= 4:
        return False
    flags = set(ds.mask_flag_enums[0])
    return flags == {MaskFlags.all_valid} or (flags == {MaskFlags.nodata} and ds.nodata is not None)


def _cached_tile(ds, href: str, ti: int, tj: int, native: bool) -> np.ndarray:
    """COG internal tile (``ti``, ``tj``) of band 1 (LRU): in its own type when ``native``
    (``kept_native``), else float32 with NaN at no data."""

    global _blocks_bytes
    key = (href, ti, tj)
    tile = _blocks.get(key)
    if tile is not None:
        _blocks.move_to_end(key)
        return tile
    th, tw = ds.block_shapes[0]
    win = Window(tj * tw, ti * th, min(tw, ds.width - tj * tw), min(th, ds.height - ti * th))
    tile = ds.read(1, window=win)
    if not native:
        tile = nodata_to_nan(ds, tile, win)
    _blocks[key] = tile
    _blocks_bytes += tile.nbytes
    while _blocks_bytes > BLOCK_CACHE_MB * 2**20 and len(_blocks) > 1:
        _blocks_bytes -= _blocks.popitem(last=False)[1].nbytes
    return tile


def read_tiles(ds, href: str, r0: int, c0: int, out: np.ndarray) -> None:
    """Fill ``out`` (h, w) float32 with band 1 of ``ds`` from pixel (``r0``, ``c0``) on,
    inside the raster, tile by tile through the decoded-tile cache (caller holds ``_lock``),
    NaN at no data."""
    h, w = out.shape
    th, tw = ds.block_shapes[0]
    native = kept_native(ds)
    nodata = ds.nodata if native else None  # compared in the band's own type, as GDAL does
    for ti in range(r0 // th, (r0 + h - 1) // th + 1):
        for tj in range(c0 // tw, (c0 + w - 1) // tw + 1):
            tile = _cached_tile(ds, href, ti, tj, native)
            a0, a1 = max(r0, ti * th), min(r0 + h, ti * th + tile.shape[0])
            b0, b1 = max(c0, tj * tw), min(c0 + w, tj * tw + tile.shape[1])
            src = tile[a0 - ti * th : a1 - ti * th, b0 - tj * tw : b1 - tj * tw]
            dst = out[a0 - r0 : a1 - r0, b0 - c0 : b1 - c0]
            dst[...] = src  # an integer type to float32: exact below 2**24
            if nodata is not None:
                dst[src == nodata] = np.nan


def read_asset(href: str, grid: GridSpec) -> np.ndarray:
    """One asset on ``grid``: (h, w) float32, NaN outside the raster and at its nodata."""

    h, w = grid.shape
    out = np.full((h, w), np.nan, np.float32)
    with _lock:  # rasterio datasets are not thread-safe; Ray Data runs one task per process
        ds = _dataset(href)
        try:
            same_crs = ds.crs is not None and ds.crs.to_epsg() == grid.epsg
            off = pixel_offset(ds.transform, grid.transform) if same_crs else None
            if off is not None:
                r0, dr, nr = overlap_1d(off[0], h, ds.height)
                c0, dc, nc = overlap_1d(off[1], w, ds.width)
                if nr and nc:
                    read_tiles(ds, href, r0, c0, out[dr : dr + nr, dc : dc + nc])
                return out
            _local.warped = warped_reads() + 1
            with WarpedVRT(
                ds,
                crs=f"EPSG:{grid.epsg}",
                transform=grid.transform,
                width=w,
                height=h,
                resampling=Resampling.nearest,
                add_alpha=ds.nodata is None,
            ) as vrt:
                a = vrt.read(out_dtype="float32", masked=True)
            if a.shape[0] == 2:  # alpha band: 0 outside the source raster
                a = np.ma.masked_array(a[0], mask=np.ma.getmaskarray(a[0]) | (a[1].data == 0))
            else:
                a = a[0]
            out[:] = a.filled(np.nan)
            return out
        except CatalogError:
            raise
        except Exception as e:  # noqa: BLE001
            raise CatalogError(f"cannot read asset {href}: {str(e).splitlines()[0]}") from e


def read_bands(
    items: Sequence[dict],
    grid: GridSpec,
    bands: Sequence[str],
    profile: CollectionProfile | None = None,
) -> np.ndarray:
    """(C, h, w) float32 of ``bands`` on ``grid``, the items (frames of one acquisition, in
    time order) mosaicked last on top; ``profile`` re-keys and signs the assets here."""
    from sar2opt import profiles

    if not items:
        raise ValueError("no items to read")
    items = sorted(items, key=lambda it: it["properties"]["datetime"])
    if profile is not None:
        items = profiles.prepare_items(items, profile, bands)
    missing = sorted({b for it in items for b in bands if b not in it.get("assets", {})})
    if missing:
        raise ValueError(f"assets {missing} missing from some items")
    out = []
    for b in bands:
        layers = np.stack([read_asset(it["assets"][b]["href"], grid) for it in items])
        out.append(mosaic_last_on_top(layers))
    return np.stack(out)


def read_sar_db(
    items: Sequence[dict],
    grid: GridSpec,
    bands: Sequence[str],
    profile: CollectionProfile | None = None,
) -> np.ndarray:
    """Sentinel-1 (C, h, w) dB on ``grid`` from one acquisition's frames (``load_sar``'s
    values: linear power, non-positive and nodata -> NaN)."""
    from sar2opt.cube.clean_s1 import linear_to_db

    return linear_to_db(read_bands(items, grid, bands, profile))


def close_all() -> None:
    """Close this process's cached datasets and drop its decoded tiles (tests; long-lived
    workers never need to)."""
    global _blocks_bytes
    with _lock:
        while _open:
            _open.popitem()[1].close()
        _blocks.clear()
        _blocks_bytes = 0


@dataclass(frozen=True)
class CatalogSar:
    """The SAR a fill reads (``run.SarSource``): the catalog's COGs, ``items_by_time[t]``
    the frames of time step ``t`` (``profile``: the S1 collection's, so assets are re-keyed
    and signed here, in the reading worker)."""

    grid: GridSpec
    items_by_time: tuple[tuple[dict, ...], ...]
    bands: tuple[str, ...]
    profile: CollectionProfile | None = None

    def read(self, t: int, window: tuple[int, int, int, int]) -> np.ndarray:
        """SAR (Cs, h, w) dB of time step ``t`` over ``window`` (row, col, height, width)."""
        r, c, h, w = window
        return read_sar_db(
            self.items_by_time[t], self.grid.subgrid(r, c, h, w), self.bands, self.profile
        )


def _meeting(items: Sequence[dict], grid: GridSpec) -> list[dict]:
    """The ``items`` whose lon/lat footprint meets ``grid`` (in their order): a strip reads
    the few DEM tiles or S2 scenes over it, not every one of a large AOI."""
    from shapely.geometry import box

    from sar2opt.cube.tiled_build import item_geometry
    from sar2opt.grid import lonlat_bounds

    fp = box(*lonlat_bounds(grid))
    return [it for it in items if item_geometry(it).intersects(fp)]


@dataclass(frozen=True)
class CatalogAux:
    """The inputs besides SAR that a fill reads for SD/SO/SOD/SC/SCO/SCOD checkpoints
    (``run.AuxSource``), by the cube's own rules so a model sees what it was trained on:

    * ``cloudy``: ``cube.build.read_cloudy`` of time step ``t`` from
      ``cloudy_items_by_time[t]`` (the S2 items within ±``rule.max_dt_days``) under
      ``rule``, over the window grown by ``rule.cloud_dilate_px`` and cropped, as the prior;

    * ``prior``: ``cube.build.read_prior`` of time step ``t`` (ISO ``times[t]``) from
      ``prior_items_by_time[t]`` under ``rule`` (the training cube's ``CubeSpec``, from the
      checkpoint), read over the window grown by ``rule.cloud_dilate_px`` (clipped to the
      grid) and cropped, as the tiled cube build reads a tile;
    * ``dem``: ``cube.window_load.read_dem`` of the ``dem_items`` meeting the window, NaN
      where none (as the cube's ``dem`` band).
    """

    grid: GridSpec
    keys: tuple[str, ...]  # of "cloudy", "prior", "dem"
    times: tuple[str, ...] = ()
    opt_bands: tuple[str, ...] = ()
    rule: CubeSpec = CubeSpec()  # the training cube's: the prior window and cloud test
    prior_items_by_time: tuple[tuple[dict, ...], ...] = ()
    s2_profile: CollectionProfile | None = None
    dem_items: tuple[dict, ...] = ()
    dem_profile: CollectionProfile | None = None
    cloudy_items_by_time: tuple[tuple[dict, ...], ...] = ()

    def read(self, t: int, window: tuple[int, int, int, int]) -> dict[str, np.ndarray]:
        """``{"cloudy": (Co + 1, h, w) reflectance and cloud mask, "prior": (Co, h, w)
        reflectance, "dem": (1, h, w) metres}`` (the keys asked for) of time step ``t`` over
        ``window`` (row, col, height, width); NaN where missing."""
        r, c, h, w = window
        out: dict[str, np.ndarray] = {}
        if "cloudy" in self.keys:
            out["cloudy"] = self.read_cloudy(t, window)
        if "prior" in self.keys:
            out["prior"] = self.read_prior(t, window)
        if "dem" in self.keys:
            from sar2opt.cube.window_load import read_dem

            sub = self.grid.subgrid(r, c, h, w)
            items = _meeting(self.dem_items, sub)
            dem = (
                read_dem(items, sub, self.dem_profile)
                if items
                else np.full((h, w), np.nan, np.float32)
            )
            out["dem"] = dem[None]
        return out

    def read_prior(self, t: int, window: tuple[int, int, int, int]) -> np.ndarray:
        """The prior (Co, h, w) of time step ``t`` over ``window``."""
        from sar2opt.cube.build import read_prior

        return self._read_s2(read_prior, self.prior_items_by_time[t], t, window)

    def read_cloudy(self, t: int, window: tuple[int, int, int, int]) -> np.ndarray:
        """The same-date S2 and its cloud mask (Co + 1, h, w) of time step ``t`` over
        ``window``."""
        from sar2opt.cube.build import read_cloudy

        return self._read_s2(read_cloudy, self.cloudy_items_by_time[t], t, window)

    def _read_s2(self, reader, items, t: int, window: tuple[int, int, int, int]) -> np.ndarray:
        """``reader`` (``build.read_prior`` or ``read_cloudy``) of time step ``t`` over
        ``window`` grown by the cloud dilation (clipped to the grid), then cropped: a cloud
        just outside the window grows into it, as in the cube's tile with its halo."""
        r, c, h, w = window
        m = int(self.rule.cloud_dilate_px)
        gh, gw = self.grid.shape
        top, left = max(r - m, 0), max(c - m, 0)
        halo = (top, left, min(r + h + m, gh) - top, min(c + w + m, gw) - left)
        sub = self.grid.subgrid(*halo)
        got = reader(
            _meeting(items, sub),
            sub,
            self.times[t],
            opt_bands=self.opt_bands,
            spec=self.rule,
            profile=self.s2_profile,
        )
        return got[:, r - top : r - top + h, c - left : c - left + w]
