"""User-facing errors: jobs print their message as one line and exit non-zero."""


class Sar2OptError(Exception):
    """Base for errors caused by the user's input or environment, not by a bug."""


class ConfigError(Sar2OptError):
    """The YAML config or a command-line override is invalid."""


class AOIError(Sar2OptError):
    """The area of interest is missing, unreadable or not a polygon."""


class CatalogError(Sar2OptError):
    """The STAC catalog is unreachable or has no data for the request."""


def first_line(err: BaseException) -> str:
    """First line of an error's message: Ray appends retry notes to errors raised in workers."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
