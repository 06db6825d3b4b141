"""Write large COGs window by window, so no whole-scene array is ever held in memory.

GDAL's COG driver only creates a file by copying a finished dataset, so each raster is first
written block by block into a tiled, uncompressed temporary GeoTIFF, then copied to a
deflate-compressed COG with overviews (GDAL streams that copy through a bounded block cache).
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from sar2opt.grid import GridSpec

BLOCK_PX = 256
GDAL_CACHE_MB = 256  # callers wrap generation in rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


class TiledCog:
    """One single-band COG filled by ``write(row, col, block)`` and sealed by ``close()``."""

    def __init__(
        self, path: str | Path, grid: GridSpec, dtype: str, nodata: float | int | None
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.name + ".part.tif")
        self.dtype = np.dtype(dtype)
        self.nodata = nodata
        self.grid = grid
        self._ds = rasterio.open(
            self.tmp,
            "w",
            driver="GTiff",
            width=grid.width,
            height=grid.height,
            count=1,
            dtype=self.dtype.name,
            crs=grid.crs,
            transform=grid.transform,
            nodata=nodata,
            tiled=True,
            blockxsize=BLOCK_PX,
            blockysize=BLOCK_PX,
            BIGTIFF="IF_SAFER",
        )

    def write(self, row: int, col: int, block: np.ndarray) -> None:
        """Write a (y, x) block whose top-left pixel is (row, col) of the grid."""
        arr = np.asarray(block)
        if self.dtype.kind in "iu" and arr.dtype.kind == "f":
            info = np.iinfo(self.dtype)
            arr = np.clip(np.rint(arr), info.min, info.max)
        arr = arr.astype(self.dtype, copy=False)
        self._ds.write(arr, 1, window=Window(col, row, arr.shape[1], arr.shape[0]))

    def close(self) -> Path:
        """Seal: copy the temporary file to the final COG and delete it. Returns the COG path."""
        if self._ds is None:
            return self.path
        self._ds.close()
        self._ds = None
        predictor = 3 if self.dtype.kind == "f" else 2
        rasterio.shutil.copy(
            self.tmp,
            self.path,
            driver="COG",
            compress="DEFLATE",
            predictor=predictor,
            blocksize=BLOCK_PX,
            overview_resampling="average" if self.dtype.kind == "f" else "nearest",
            BIGTIFF="IF_SAFER",
        )
        self.tmp.unlink(missing_ok=True)
        return self.path

    def abort(self) -> None:
        """Drop the temporary file (on error)."""
        if self._ds is not None:
            self._ds.close()
            self._ds = None
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> TiledCog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
