"""Who the client is behind a reverse proxy: ``Forwarded`` (RFC 7239) and ``X-Forwarded-For``,
believed only from the proxies ``OPTBENCH_FORWARDED_ALLOW_IPS`` names.

The outermost middleware. For a request whose TCP peer is a trusted proxy, the client is
found by walking the forwarded chain from the right (the hop the trusted proxy appended)
past further trusted proxies; the first untrusted hop is the client. Its address replaces
``scope["client"]`` (and the hop's ``proto``, ``scope["scheme"]``), so the loopback check
and the failed-authentication limit see the real client. Walking from the right matters: a
client may send any header it likes, and a proxy *appends* to it, so only the right end was
written by someone we trust.

Decisions:
- Both headers are understood because proxies differ (nginx writes X-Forwarded-For when
  configured to, others write Forwarded). When both arrive and name different clients, one
  of them is a client's forgery that a proxy passed through (it writes only the other):
  neither is believed, and the request counts as forwarded from an unknown client.
- A request that carries either header but did not come from a trusted proxy keeps its peer
  as the client and is marked *forwarded* (``scope[FORWARDED_KEY]``): under
  ``OPTBENCH_AUTH=loopback`` it is not local, since something relayed it to this machine
  (a same-machine proxy whose address nobody configured). A CLI or browser on this machine
  sends neither header.
- uvicorn has its own X-Forwarded-For handling (trusting 127.0.0.1 by default); ``optbench
  api`` turns it off (``proxy_headers=False``) so that this is the one place that decides.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

FORWARDED_KEY = "optbench.forwarded"  # True: a proxy relayed it, and it is not believed
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_PAIR = re.compile(r'\s*([A-Za-z]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)\s*')


class ForwardedMiddleware:
    def __init__(self, app: ASGIApp, trusted: Sequence[Network]) -> None:
        self.app = app
        self.trusted = list(trusted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = self.resolve(scope)
        await self.app(scope, receive, send)

    def resolve(self, scope: Scope) -> Scope:
        headers = Headers(scope=scope)
        chains = [
            chain
            for chain in (
                _forwarded(headers.getlist("forwarded")),
                _x_forwarded(headers.getlist("x-forwarded-for"), headers.get("x-forwarded-proto")),
            )
            if chain
        ]
        if not chains:
            return scope
        peer = scope.get("client")
        if not peer or not self.is_trusted(peer[0]):
            return {**scope, FORWARDED_KEY: True}
        found = {self.client_of(chain) for chain in chains}
        if len({address for address, _ in found}) != 1:
            return {**scope, FORWARDED_KEY: True}  # the two headers disagree: a forgery
        address, proto = found.pop()
        resolved = {**scope, "client": (address, 0)}
        if proto in ("http", "https"):
            resolved["scheme"] = proto
        return resolved

    def client_of(self, chain: list[tuple[str, str | None]]) -> tuple[str, str | None]:
        """The rightmost hop that is not a trusted proxy (the leftmost if all are)."""
        for address, proto in reversed(chain):
            if not self.is_trusted(address):
                return address, proto
        return chain[0]

    def is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False  # "unknown", an obfuscated name: never a proxy of ours
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.trusted)


def _forwarded(values: list[str]) -> list[tuple[str, str | None]]:
    """``for``/``proto`` of each element of ``Forwarded`` headers, left to right."""
    chain = []
    for value in values:
        for element in _split_elements(value):
            pairs = {name.lower(): raw.strip('"') for name, raw in _PAIR.findall(element) if name}
            if "for" in pairs:
                chain.append((_node_address(pairs["for"]), pairs.get("proto", "").lower() or None))
    return chain


def _split_elements(value: str) -> list[str]:
    """Split on commas outside quoted strings (a quoted value may hold one)."""
    elements: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            elements.append("".join(current))
            current = []
        else:
            current.append(char)
    elements.append("".join(current))
    return [element for element in elements if element.strip()]


def _x_forwarded(values: list[str], proto: str | None) -> list[tuple[str, str | None]]:
    addresses = [item.strip() for value in values for item in value.split(",") if item.strip()]
    protos: list[str | None] = [p.strip().lower() for p in (proto or "").split(",") if p.strip()]
    if len(protos) != len(addresses):  # then only the last proxy's is known
        last = protos[-1] if protos else None
        protos = [None for _ in addresses[1:]]
        protos.append(last)
    return [(_node_address(address), p) for address, p in zip(addresses, protos, strict=True)]


def _node_address(node: str) -> str:
    """``[2001:db8::1]:4711`` -> ``2001:db8::1``; ``192.0.2.1:80`` -> ``192.0.2.1``."""
    node = node.strip()
    if node.startswith("["):
        return node[1:].partition("]")[0]
    if node.count(":") == 1:
        return node.partition(":")[0]
    return node
