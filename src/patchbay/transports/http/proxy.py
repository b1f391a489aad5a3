"""Which proxy, if any, a remote upstream's traffic goes through.

httpx2 reads ``HTTP(S)_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY`` only when it builds its own transport; patchbay
hands it a watched one, so the choice is made here, once per wire (one upstream is one origin):

* the server's ``proxy`` setting wins over the environment, and ``NO_PROXY`` does not apply to it;
* otherwise the environment, as curl reads it: ``https_proxy`` for https URLs, ``http_proxy`` for http,
  ``all_proxy`` for either, lower case before upper case, and no proxy for hosts ``NO_PROXY`` lists.
  Loopback is *not* exempt by default (some clients exempt it, httpx2 does not): list it in ``NO_PROXY``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import urllib.request
from urllib.parse import urlsplit

from patchbay.config import check_proxy


def environment_proxy(url: str) -> tuple[str, str] | None:
    """``(proxy URL, variable it came from)`` for ``url`` from the environment, or None to go direct."""
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    value, var = proxies.get(scheme), f"{scheme}_proxy"
    if not value:
        value, var = proxies.get("all"), "all_proxy"
    if not value:
        return None
    if bypassed(parts.hostname or "", parts.port, proxies.get("no", "")):
        return None
    return (value if "://" in value else f"http://{value}"), var


def bypassed(host: str, port: int | None, no_proxy: str) -> bool:
    """Whether ``NO_PROXY`` exempts the host, as curl reads it.

    Entries are comma-separated: ``*`` (everything), a name (itself and its subdomains; a leading dot is
    optional), an IP address, a CIDR range (``10.0.0.0/8``), each optionally with ``:port``.
    """
    host = host.lower().rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry, only_port = _split_port(entry)
        if only_port is not None and only_port != port:
            continue
        if address is not None:
            with contextlib.suppress(ValueError):
                if address in ipaddress.ip_network(entry.strip("[]"), strict=False):
                    return True
            continue
        name = entry.lstrip("*").lstrip(".").rstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    """``host:port`` / ``[v6]:port`` into its parts; a bare IPv6 address keeps its colons."""
    if entry.startswith("["):
        addr, _, rest = entry[1:].partition("]")
        return addr, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        if port.isdigit():
            return name, int(port)
    return entry, None


def choose_proxy(server: str, url: str, explicit: str | None) -> str | None:
    """The proxy for ``url``: the server's own ``proxy``, else the environment's, else None (direct).

    An environment proxy that patchbay cannot use is a ConfigError naming the variable, not a mystery
    at connect time.
    """
    if explicit:
        return explicit
    found = environment_proxy(url)
    if found is None:
        return None
    value, var = found
    return check_proxy(server, value, field=f"environment variable {var.upper()}")
