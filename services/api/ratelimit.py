"""Failed authentications, limited per client address (``OPTBENCH_AUTH_FAILURES_PER_MINUTE``).

A token bucket per client: a burst of N failures, then one more every 60/N seconds. While a
client's bucket is empty, a request of it that carries a key (or a /metrics token) is answered
429 with ``Retry-After`` *before* the key is looked up, so guessing keys costs the database
nothing once limited. A right key from a limited address waits too: telling it apart from a
wrong one would need the lookup the limit exists to save. Successes do not refill the
bucket (else one valid key would launder any number of guesses).

Decisions:
- *Client address* is the TCP peer, or what a trusted proxy forwarded (services/api/proxies.py).
  IPv6 clients count by their /64 prefix: one host is routinely given a whole /64, and
  rotating addresses inside it must not reset the limit.
- The state is in this process's memory (one API process per ``optbench api``); several API
  processes each limit on their own. At most ``max_clients`` addresses are tracked: past that
  the least recently failed is forgotten (O(1)), so a flood from many addresses cannot grow
  the API's memory; an attacker with more addresses than that gets a fresh allowance per
  address anyway.
- It runs on the event loop only (AuthMiddleware), so it needs no lock.
"""

from __future__ import annotations

import ipaddress
import math
import time

_now = time.monotonic  # tests replace it


class FailureLimiter:
    def __init__(self, per_minute: int, max_clients: int = 10_000) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # failures regained per second
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)

    def __len__(self) -> int:
        return len(self._buckets)

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may fail once more; None when it may now."""
        tokens = self._tokens(client_key(client), _now())
        if tokens >= 1:
            return None
        return max(1, math.ceil((1 - tokens) / self.rate))

    def failed(self, client: str) -> None:
        """Count one failed authentication of ``client``."""
        key, now = client_key(client), _now()
        tokens = max(0.0, self._tokens(key, now) - 1)
        self._buckets.pop(key, None)  # re-inserted last: dict order is the age order
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            # The least recently failed first (dict order): the most nearly refilled.
            del self._buckets[next(iter(self._buckets))]

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.rate)


def client_key(client: str) -> str:
    """The bucket of an address: itself for IPv4 (also IPv4-mapped IPv6), its /64 for IPv6,
    the text as it is for anything else (``unknown``, an obfuscated ``Forwarded`` name)."""
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{address}/64", strict=False))
    return str(address)
