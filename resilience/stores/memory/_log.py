"""One limit's sliding log for one key, in process memory (see ``_window.py``).

Entries live in three parallel lists (slot time, weight, token) sorted by slot time, with a
``head`` index before which entries have left the window: trimming moves ``head`` instead of
shifting the lists, and the dead prefix is dropped once it is larger than the live part, so a
decision costs O(log n) amortized however long the log is. Entries with the token ``""`` are
never released (``window_admit``'s, and merged slots: see :meth:`Log.merge`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

__all__ = ["COMPACT_MIN", "Log"]

#: The dead prefix is dropped once it holds at least this many entries (and half the lists).
COMPACT_MIN = 64


class Log:
    """One limit's log for one key: live entries are ``at[head:]`` (sorted), their total
    weight, the penalty end and the limit's window (for the idle sweep)."""

    __slots__ = (
        "at",
        "cap",
        "cap_until",
        "compacted",
        "head",
        "penalty",
        "tokens",
        "total",
        "weights",
        "window",
    )

    def __init__(self, window: int) -> None:
        self.window = window
        self.at: list[int] = []
        self.tokens: list[str] = []
        self.weights: list[int] = []
        self.head = 0
        self.total = 0
        self.penalty = 0
        self.cap = 0  # a learned limit (window_learn), in force until cap_until
        self.cap_until = 0
        self.compacted = 0  # merging: reservations due up to this time are merged (compact)

    def limit(self, limit: int, cost: int, now: int) -> int:
        """``limit``, or the learned cap while it is in force (never below ``cost``)."""
        if self.cap_until > now and self.cap < limit:
            return self.cap if self.cap > cost else cost
        return limit

    def trim(self, horizon: int) -> None:
        """Drop the entries at or before ``horizon`` (= now - window): they left the window."""
        at = self.at
        head = self.head
        if head < len(at) and at[head] <= horizon:
            w = self.weights
            k = head + 1
            if k < len(at) and at[k] <= horizon:
                k = bisect_right(at, horizon, k)
                self.total -= sum(w[head:k])
            else:  # the common case under steady traffic: one entry left since the last call
                self.total -= w[head]
            if k >= COMPACT_MIN and k * 2 >= len(at):
                del at[:k], self.tokens[:k], w[:k]
                k = 0
            self.head = k

    def earliest(self, now: int, window: int, limit: int, cost: int) -> int:
        """Earliest slot time >= now at which ``cost`` more units fit (ignoring the penalty)."""
        need = self.total + cost - limit
        if need <= 0:
            return now
        acc = 0
        weights = self.weights
        for i in range(self.head, len(weights)):
            acc += weights[i]
            if acc >= need:
                slot = self.at[i] + window
                return slot if slot > now else now
        raise AssertionError("log total out of sync")  # pragma: no cover

    def insert(self, at: int, token: str, cost: int) -> None:
        times = self.at
        if not times or times[-1] <= at:  # the common case: the newest entry
            times.append(at)
            self.tokens.append(token)
            self.weights.append(cost)
        else:
            i = bisect_right(times, at, self.head)
            times.insert(i, at)
            self.tokens.insert(i, token)
            self.weights.insert(i, cost)
        self.total += cost

    def merge(self, end: int, cost: int) -> None:
        """Add ``cost`` units to the merged entry at ``end`` (a slot's last microsecond, see
        :func:`resilience.stores.base.merge_slot_us`), created if there is none."""
        at = self.at
        if at and at[-1] == end and not self.tokens[-1]:  # the common case: the newest entry
            self.weights[-1] += cost
            self.total += cost
            return
        i = bisect_left(at, end, self.head)
        while i < len(at) and at[i] == end:
            if not self.tokens[i]:  # an entry nobody releases (merged, or window_admit's)
                self.weights[i] += cost
                self.total += cost
                return
            i += 1
        self.insert(end, "", cost)

    def compact(self, upto: int, slot: int) -> None:
        """Merge the merging callers' reservations (tokens ``m...``) due at or before ``upto``
        into their slots' entries (see ``window_acquire.lua``, which does the same: at most
        once per ``slot`` of time)."""
        if upto - self.compacted < slot:
            return
        at = self.at
        lo = bisect_right(at, self.compacted, self.head)
        hi = bisect_right(at, upto, lo)
        self.compacted = upto
        if hi <= lo:
            return
        moved = [
            (at[i] - at[i] % slot + slot - 1, self.weights[i])
            for i in range(lo, hi)
            if self.tokens[i][:1] == "m"
        ]
        if moved:
            keep = [i for i in range(lo, hi) if self.tokens[i][:1] != "m"]
            at[lo:hi] = [at[i] for i in keep]
            self.tokens[lo:hi] = [self.tokens[i] for i in keep]
            self.weights[lo:hi] = [self.weights[i] for i in keep]
            for end, w in moved:
                self.total -= w
                self.merge(end, w)

    def find(self, token: str, weight: int) -> int:
        """The index of the live entry ``token`` of weight ``weight``, or -1."""
        if not token:
            return -1
        try:
            i = self.tokens.index(token, self.head)
        except ValueError:
            return -1
        return i if self.weights[i] == weight else -1

    def remove(self, token: str) -> bool:
        """Remove the entry of ``token``; a merging caller's ``m<n>`` may also be ``<n>`` (an
        admission for now that kept its own entry, see ``window_acquire.lua``)."""
        if not token:  # entries admitted by window_admit carry "": nobody releases them
            return False
        try:
            i = self.tokens.index(token, self.head)
        except ValueError:
            if token[0] != "m":
                return False
            try:
                i = self.tokens.index(token[1:], self.head)
            except ValueError:
                return False
        self.total -= self.weights[i]
        del self.at[i], self.tokens[i], self.weights[i]
        return True
