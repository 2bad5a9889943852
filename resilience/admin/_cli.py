"""The operator commands of ``resilience``: ``status``, ``breaker open|close``, ``pause``,
``resume``, ``reset``, ``audit``, over a Redis store (``--redis URL`` or
``RESILIENCE_REDIS_URL``). See ``docs/operations.md``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from resilience.admin import _actions as actions
from resilience.admin._render import render_audit, render_json, render_status
from resilience.admin._status import status
from resilience.errors import ResilienceError

__all__ = ["ENV_URL", "add_commands", "run"]

#: The environment variable read when ``--redis`` is not given.
ENV_URL = "RESILIENCE_REDIS_URL"
#: ... and the one that selects Redis Cluster (``1``, ``true``, ``yes``).
ENV_CLUSTER = "RESILIENCE_REDIS_CLUSTER"

_DESTRUCTIVE = {"breaker open", "pause", "reset"}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--redis",
        metavar="URL",
        default=None,
        help=f"the store's URL (redis://, rediss://, valkey://, ...; default: ${ENV_URL})",
    )
    p.add_argument("--prefix", default="resilience", help="the store's key prefix")
    p.add_argument(
        "--cluster",
        action="store_true",
        default=None,
        help=f"the URL names a Redis Cluster node (or set ${ENV_CLUSTER}=1)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _target(p: argparse.ArgumentParser, what: str, destructive: bool) -> None:
    p.add_argument("name", help=f"the {what}'s name (as registered: see 'resilience status')")
    p.add_argument("--key", default=None, help="one key only (default: every key)")
    p.add_argument("--who", default=None, help="who to log (default: user@host)")
    if destructive:
        p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    _common(p)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the operator commands to the subcommands ``sub``."""
    p = sub.add_parser("status", help="limiters, breakers, budgets, processes of a store")
    p.add_argument("--keys", type=int, default=20, help="keys shown per name (default 20)")
    _common(p)
    p = sub.add_parser("breaker", help="open or close a circuit breaker, fleet-wide")
    bsub = p.add_subparsers(dest="breaker_action", required=True)
    p = bsub.add_parser("open", help="open a breaker (every key, or --key)")
    p.add_argument("--for", dest="seconds", type=_seconds, default=None, help="seconds")
    _target(p, "breaker", True)
    _target(
        bsub.add_parser("close", help="close a breaker (every key, or --key)"), "breaker", False
    )
    p = sub.add_parser("pause", help="pause a limiter (by name: every key, new ones too)")
    p.add_argument("--for", dest="seconds", type=_seconds, required=True, help="seconds")
    _target(p, "limiter", True)
    _target(sub.add_parser("resume", help="lift a limiter's pauses"), "limiter", False)
    _target(sub.add_parser("reset", help="forget a breaker's or limiter's state"), "policy", True)
    p = sub.add_parser("audit", help="the operator actions logged in the store")
    p.add_argument("--count", type=int, default=20, help="entries shown (default 20)")
    _common(p)


def _store(args: argparse.Namespace) -> Any:
    from resilience.stores import RedisStore

    url = args.redis or os.environ.get(ENV_URL)
    if not url:
        raise SystemExit(f"resilience {args.command}: give --redis URL or set ${ENV_URL}")
    cluster = args.cluster
    if cluster is None:
        cluster = os.environ.get(ENV_CLUSTER, "").lower() in ("1", "true", "yes")
    return RedisStore.from_url(url, prefix=args.prefix, timeout=5.0, cluster=cluster)


def _confirm(command: str, args: argparse.Namespace) -> bool:
    if command not in _DESTRUCTIVE or getattr(args, "yes", False):
        return True
    target = f"{args.name!r}" + ("" if args.key is None else f" key {args.key!r}")
    every = "" if args.key is not None else " (every key)"
    question = f"{command} {target}{every} on {args.redis or os.environ.get(ENV_URL)}? [y/N] "
    if not sys.stdin.isatty():
        print(f"resilience {command}: not a terminal, pass --yes to confirm", file=sys.stderr)
        return False
    return input(question).strip().lower() in ("y", "yes")


def _action(args: argparse.Namespace) -> tuple[str, Callable[[Any], Awaitable[Any]]]:
    cmd = args.command
    if cmd == "breaker":
        cmd = f"breaker {args.breaker_action}"
    kw: dict[str, Any] = {}
    if cmd in ("breaker open", "pause"):
        kw["for_"] = args.seconds
    fn: Any = {
        "breaker open": actions.breaker_open,
        "breaker close": actions.breaker_close,
        "pause": actions.pause,
        "resume": actions.resume,
        "reset": actions.reset,
    }[cmd]
    return cmd, lambda store: fn(store, args.name, args.key, who=args.who, **kw)


async def _run(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        if args.command == "status":
            st = await status(store, keys_per_name=max(args.keys, 0))
            print(render_json(st) if args.json else render_status(st))
        elif args.command == "audit":
            entries = await actions.audit(store, args.count)
            print(render_json(entries) if args.json else render_audit(entries))
        else:
            _, act = _action(args)
            entry = await act(store)
            if args.json:
                print(render_json(entry))
            else:
                key = "every key" if entry.key is None else f"key {entry.key!r}"
                span = "" if entry.seconds is None else f" for {entry.seconds:g}s"
                print(
                    f"{entry.action} {entry.name!r} ({key}, {entry.touched} known){span}: "
                    f"done, logged as {entry.who}"
                )
    finally:
        await store.aclose()
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the operator command parsed into ``args``; the exit status."""
    if args.command not in ("status", "audit"):
        command, _ = _action(args)
        if not _confirm(command, args):
            print("cancelled", file=sys.stderr)
            return 1
    try:
        return asyncio.run(_run(args))
    except (LookupError, TypeError, ValueError, ResilienceError) as exc:
        print(f"resilience {args.command}: {exc}", file=sys.stderr)
        return 1
