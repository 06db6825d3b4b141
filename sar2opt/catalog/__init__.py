"""Local STAC catalog stage: COGs + Planetary-Computer-shaped items + a rustac STAC API server.

``generate_scene`` / ``generate_region`` (the synthetic Earth), ``ingest_multiearth`` (the
real MultiEarth sample) and ``ingest.ingest`` (any folder of GeoTIFFs through a manifest; the
SSL4EO and BioMassters manifests in ``sets``) write ``items.parquet``; ``CatalogServer``
serves it so later stages search it like any STAC API.
"""

from sar2opt.catalog.cog import write_cog
from sar2opt.catalog.items import (
    DEM_COLLECTION,
    S1_COLLECTION,
    S2_COLLECTION,
    dem_item,
    s1_item,
    s2_item,
    write_catalog,
)
from sar2opt.catalog.multiearth import ingest_multiearth
from sar2opt.catalog.server import CatalogServer
from sar2opt.catalog.synthetic import generate_region, generate_scene

__all__ = [
    "DEM_COLLECTION",
    "S1_COLLECTION",
    "S2_COLLECTION",
    "CatalogServer",
    "dem_item",
    "generate_region",
    "generate_scene",
    "ingest_multiearth",
    "s1_item",
    "s2_item",
    "write_catalog",
    "write_cog",
]
