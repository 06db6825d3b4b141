"""Credentials in a STAC URL (``https://user:pass@host/api?token=...``) stay in memory.

Everything a job records or prints about its catalog (configs in Zarr attrs and checkpoint
metadata, STAC items, logs, error messages) takes ``catalog.stac_url`` as it is, so the job
kit replaces a URL that carries credentials by its ``public_url`` before the config is built
(``remember``), and keeps the secret parts here, in this process only. ``client_args`` puts
them back for the one place that talks to the catalog (``sar2opt.stac``).

Query parameters are all treated as secret (SAS tokens, ``subscription-key``, ``api_key``):
a catalog URL needs none to be named.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit, urlunsplit

#: public URL -> (userinfo "user:pass" or "", query parameters)
_SECRETS: dict[str, tuple[str, dict[str, str]]] = {}


def _split(url: str) -> tuple[str, str, dict[str, str]]:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return url, "", {}
    userinfo, _, hostport = parts.netloc.rpartition("@")
    public = urlunsplit((parts.scheme, hostport, parts.path, "", ""))
    return public, userinfo, dict(parse_qsl(parts.query, keep_blank_values=True))


def public_url(url: str) -> str:
    """``url`` without user, password, query string and fragment: what may be recorded."""
    return _split(url)[0]


def remember(url: str) -> str:
    """Keep the credentials of ``url`` in memory; its ``public_url``."""
    public, userinfo, query = _split(url)
    if userinfo or query:
        _SECRETS[public] = (userinfo, query)
    return public


def client_args(url: str) -> dict:
    """``Client.open`` keyword arguments for the catalog at ``url``: the credentials
    ``remember`` kept for it, as a Basic ``Authorization`` header (sent with every request,
    links followed too) and query ``parameters`` (added to every request)."""
    import base64

    userinfo, query = _SECRETS.get(url, ("", {}))
    headers = None
    if userinfo:
        from urllib.parse import unquote

        token = base64.b64encode(unquote(userinfo).encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
    return {"url": url, "headers": headers, "parameters": dict(query) or None}
