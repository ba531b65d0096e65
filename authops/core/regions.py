"""Map a client address to a named region (configured CIDR blocks), for audit and anomaly rules."""

from __future__ import annotations

import functools
import ipaddress

from authops.core.settings import Settings


@functools.lru_cache(maxsize=8)
def _table(spec: str) -> tuple[tuple[str, ipaddress._BaseNetwork], ...]:
    table = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, _, cidrs = part.partition("=")
        for cidr in filter(None, (c.strip() for c in cidrs.split(","))):
            table.append((name.strip(), ipaddress.ip_network(cidr, strict=False)))
    return tuple(table)


def region_of(settings: Settings, ip: str | None) -> str | None:
    if not ip:
        return None
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return settings.region_default
    for name, net in _table(settings.regions):
        if addr.version == net.version and addr in net:
            return name
    return settings.region_default
