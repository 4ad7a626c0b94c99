"""Where the metrics endpoint listens: ``metrics.listen`` parsed."""

from __future__ import annotations

import ipaddress

import attrs

__all__ = ["DEFAULT_HOST", "Listen", "parse_listen"]

DEFAULT_HOST = "127.0.0.1"


@attrs.frozen
class Listen:
    """Where the endpoint listens."""

    host: str
    port: int

    @property
    def bind(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


def parse_listen(value: str | int) -> Listen:
    """``"host:port"``, ``"[v6]:port"``, ``":port"`` or a port alone (the
    host is then 127.0.0.1: binding elsewhere is always written out).

    Raises:
        ValueError: not an address with a port from 0 to 65535.
    """
    text = str(value).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or DEFAULT_HOST
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port (such as 127.0.0.1:9464) or a port; got {value!r}")
    return Listen(host, int(port))
