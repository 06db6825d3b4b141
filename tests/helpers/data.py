"""Where the repository and the real data live, and the mark for tests that need the data."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()
MULTIEARTH = SHARED_DATA / "multiearth_sample"

requires_shared_data = pytest.mark.skipif(
    not MULTIEARTH.is_dir(), reason=f"real sample not found at {MULTIEARTH}"
)


def search_in(items):
    """A stand-in for ``stac.search_aoi`` over a generated scene's ``items`` (collection and
    dates only): the readers' tests run on the scene's COGs without serving a catalog."""

    def search(catalog, collection, aoi, start, end):
        return [
            it
            for it in items
            if it["collection"] == collection and start <= it["properties"]["datetime"][:10] <= end
        ]

    return search
