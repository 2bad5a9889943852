"""How the operator commands print: plain-text tables, or JSON (``--json``)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any

from resilience.admin._actions import AuditEntry
from resilience.admin._status import Status

__all__ = ["render_audit", "render_json", "render_status", "table"]


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns, two spaces apart."""
    cells = [[str(h) for h in headers], *[[_cell(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells)
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if value <= 0 else _seconds(value)
    if value == "":
        return '""'
    return str(value)


def _seconds(s: float) -> str:
    if s >= 120:
        return f"{s / 60:.1f}m"
    return f"{s:.1f}s" if s >= 10 else f"{s:.2f}s"


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def render_status(st: Status) -> str:
    """The status as tables, one per kind (a kind with nothing registered is left out)."""
    out = [f"store {st.store} at {_when(st.at)}"]
    if st.limiters:
        rows = []
        for lim in st.limiters:
            hold = lim.held_for
            if not lim.keys:
                rows.append([lim.name, None, f"0/{lim.limit}", lim.window, None, None, hold])
            for k in lim.keys:
                used = f"{k.used}/{k.limit}"
                rows.append([lim.name, k.key, used, lim.window, k.learned, k.paused_for, hold])
            if lim.keys_total > len(lim.keys):
                more = f"(+{lim.keys_total - len(lim.keys)} keys)"
                rows.append([lim.name, more, "", "", "", "", ""])
        headers = ["LIMITER", "KEY", "USED/LIMIT", "WINDOW", "LEARNED", "KEY PAUSED", "NAME HELD"]
        out += ["", table(headers, rows)]
    if st.breakers:
        rows = []
        for b in st.breakers:
            settings = f"{b.failure_threshold} in {_seconds(b.window)}"
            for bk in b.keys:
                rows.append(
                    [b.name, bk.key, bk.state, bk.failures, settings, bk.open_for, bk.probes_out]
                )
            if not b.keys:
                rows.append([b.name, None, "closed", 0, settings, None, 0])
        headers = ["BREAKER", "KEY", "STATE", "FAILURES", "TRIPS AT", "OPEN FOR", "PROBES"]
        out += ["", table(headers, rows)]
    if st.budgets:
        rows = [
            [b.name, f"{b.ratio:.0%}", f"{b.window}s", b.requests, b.retries, b.balance]
            for b in st.budgets
        ]
        headers = ["BUDGET", "RATIO", "WINDOW", "REQUESTS", "RETRIES", "BALANCE"]
        out += ["", table(headers, rows)]
    if st.concurrency:
        rows = [
            [c.name, len(c.keys), c.in_flight, c.waiting, json.dumps(dict(c.settings))]
            for c in st.concurrency
        ]
        out += ["", table(["CONCURRENCY", "KEYS", "IN FLIGHT", "WAITING", "SETTINGS"], rows)]
    if st.processes:
        rows = [[p.member, p.pid, ", ".join(p.limiters)] for p in st.processes]
        out += ["", table(["PROCESS", "PID", "LIMITERS"], rows)]
    if len(out) == 1:
        out += ["", "nothing registered yet (policies register on their first call)"]
    return "\n".join(out)


def render_audit(entries: Sequence[AuditEntry]) -> str:
    """The audit log as a table, newest first."""
    rows = [
        [
            _when(e.at),
            e.who,
            e.action,
            e.name,
            "*" if e.key is None else e.key,
            e.seconds,
            e.touched,
        ]
        for e in entries
    ]
    return table(["WHEN", "WHO", "ACTION", "NAME", "KEY", "FOR", "KEYS"], rows)


def render_json(value: Any) -> str:
    """Dataclasses (and sequences of them) as JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    elif isinstance(value, (list, tuple)):
        value = [_plain(v) for v in value]
    return json.dumps(value, indent=2, sort_keys=True)


def _plain(v: Any) -> Any:
    return dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
