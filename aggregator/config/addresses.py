"""URLs and hosts as the operator writes them: feed and site URLs, ``allow_private_hosts``
entries (host, address or CIDR network) and ``listen`` addresses."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

_HOST_RE = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?\Z",
    re.I,
)


def _url_error(url: str) -> str | None:
    """Why ``url`` is not a usable http(s) URL, or None."""
    if any(ch.isspace() for ch in url):
        return f"invalid URL {url!r}: contains a space (percent-encode it as %20)"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return f"invalid URL {url!r}: contains a control character"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"invalid URL {url!r}: {exc}"
    if parts.scheme.lower() not in ("http", "https"):
        got = f"'{parts.scheme}'" if parts.scheme else "none"
        return f"invalid URL {url!r}: scheme must be http or https, got {got}"
    host = parts.hostname or ""
    if not host:
        return f"invalid URL {url!r}: no host"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            return f"invalid URL {url!r}: bad IPv6 address {host!r}"
    elif not re.fullmatch(r"[\w.-]+", host):
        return f"invalid URL {url!r}: bad host name {host!r}"
    return None


def _url_key(url: str) -> str:
    """Identity of a feed URL: scheme-less, host lower-cased, no trailing slash, no fragment."""
    try:
        parts = urlsplit(url.strip())
        netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return url.strip()
    key = netloc + parts.path.rstrip("/")
    return key + (f"?{parts.query}" if parts.query else "")


def _host_entry_error(entry: str) -> str | None:
    """``allow_private_hosts`` entries: a host name, an IP address or a CIDR network."""
    if "/" in entry:
        try:
            ipaddress.ip_network(entry, strict=True)
        except ValueError as exc:
            try:
                loose = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                return f"{entry!r} is not a valid CIDR network ({exc})"
            return f"{entry!r} has host bits set; did you mean '{loose}'?"
        return None
    try:
        ipaddress.ip_address(entry.strip("[]"))
        return None
    except ValueError:
        pass
    if _HOST_RE.match(entry):
        return None
    return f"{entry!r} is not a host name, IP address or CIDR network"


def _listen_error(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        return f"listen must be host:port (e.g. 127.0.0.1:8080), got {value!r}"
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"listen port must be 1-65535, got {port!r}"
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host.strip("[]"))
        except ValueError:
            return f"listen host {host!r} is not an IPv6 address"
    elif _host_entry_error(host) is not None or ":" in host:
        return f"listen host {host!r} is not a host name or IP address (IPv6 goes in [])"
    return None
