"""Where webhooks may be sent: out to the internet, never into the platform's own network.

A webhook URL is chosen by a stranger (any provider or user), and billfold's workers send
to it from inside the platform. Unless BILLFOLD_WEBHOOK_ALLOW_PRIVATE is set (local
development, and the tests' own receivers), a URL must be `https` and every address its
host resolves to must be a public one: not loopback, private, link-local, multicast,
reserved or unspecified. The check runs when the endpoint is created and again before
each delivery, since a name's DNS answer can change after it was first checked.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlparse

from billfold.domain.errors import InvalidRequest

Resolver = Callable[[str, int], list[str]]
MAX_URL_LENGTH = 2000


def resolve(host: str, port: int) -> list[str]:
    """The addresses a host name resolves to (the system's resolver)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return sorted({str(info[4][0]) for info in found})


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def check_destination(url: str, *, allow_private: bool, resolver: Resolver | None = None) -> None:
    """Refuses (400, `destination_not_allowed`) a URL that webhooks may not be sent to."""
    parsed = urlparse(url)
    schemes = ("http", "https") if allow_private else ("https",)
    if parsed.scheme not in schemes or not parsed.hostname or len(url) > MAX_URL_LENGTH:
        raise InvalidRequest(
            "url must be an absolute https URL"
            if not allow_private
            else "url must be an absolute http(s) URL",
            code="invalid_request",
            param="url",
        )
    if allow_private:
        return
    port = parsed.port or 443
    addresses = (resolver or resolve)(parsed.hostname, port)
    if not addresses:
        raise InvalidRequest(
            f"{parsed.hostname} does not resolve", code="destination_not_allowed", param="url"
        )
    if not all(_public(address) for address in addresses):
        raise InvalidRequest(
            f"{parsed.hostname} resolves to an address webhooks may not be sent to "
            "(loopback, private, link-local, multicast or reserved)",
            code="destination_not_allowed",
            param="url",
        )
