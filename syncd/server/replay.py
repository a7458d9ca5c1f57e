"""Refusing a signed pull seen before while its timestamp is still valid.

A sign is kept until its own timestamp leaves the window (a request stamped in the future stays
valid longer, so must its sign). The cache is bounded; when it is full of signs that are all
still valid, a new request is turned away as busy rather than evicting one of them, since an
evicted sign could then be replayed.
"""

from __future__ import annotations

import heapq
from enum import StrEnum

__all__ = ["Admission", "ReplayCache"]


class Admission(StrEnum):
    FRESH = "fresh"  # first sighting; now remembered
    REPLAY = "replay"  # seen before and still inside its window
    FULL = "full"  # not seen, but no room to remember it: answer busy


class ReplayCache:
    """Seen signs, grouped by the second at which they expire (one heap entry per second)."""

    def __init__(self, window_s: float, max_entries: int = 100_000) -> None:
        self._window_s = int(window_s)
        self._max_entries = max_entries
        self._expiry_by_key: dict[bytes | str, int] = {}
        self._keys_by_expiry: dict[int, list[bytes | str]] = {}
        self._expiries: list[int] = []  # heap of the seconds in _keys_by_expiry

    def __len__(self) -> int:
        return len(self._expiry_by_key)

    @property
    def max_entries(self) -> int:
        return self._max_entries

    def admit(self, key: bytes | str, timestamp: int, now: float) -> Admission:
        """Remember ``key`` unless it is a replay or there is no room for it."""
        self._forget_expired(now)
        if key in self._expiry_by_key:
            return Admission.REPLAY
        if len(self._expiry_by_key) >= self._max_entries:
            return Admission.FULL
        expires_at = int(timestamp) + self._window_s
        self._expiry_by_key[key] = expires_at
        bucket = self._keys_by_expiry.get(expires_at)
        if bucket is None:
            self._keys_by_expiry[expires_at] = [key]
            heapq.heappush(self._expiries, expires_at)
        else:
            bucket.append(key)
        return Admission.FRESH

    def seen_before(self, key: bytes | str, timestamp: float, now: float) -> bool:
        """True unless ``key`` is fresh (a full cache counts as seen: the request is not served)."""
        return self.admit(key, int(timestamp), now) is not Admission.FRESH

    def _forget_expired(self, now: float) -> None:
        while self._expiries and self._expiries[0] < now:
            for key in self._keys_by_expiry.pop(heapq.heappop(self._expiries)):
                del self._expiry_by_key[key]
