"""Region inference: plan tiles, predict them on a Ray Data actor pool, blend, write a mosaic."""
