"""``mailwright queue``: look at and act on the queue of a running (or stopped) server.

Works beside a running server: it opens the same SQLite queue in the admin
role, which never touches the server's claims.  ``retry`` makes recipients due
now; the server's worker picks them up at its next look at the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import datetime

from mailwright.errors import ConfigError, StorageError
from mailwright.queue.base import QueuedMessage
from mailwright.queue.sqlite import SqliteQueueStore

EXIT_USAGE = 2
EXIT_NOT_FOUND = 1


def _when(ts: float) -> str:
    if ts <= time.time():
        return "now"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def format_message(message: QueuedMessage, *, verbose: bool) -> str:
    sender = f"<{message.sender}>" if message.sender is not None else "<> (bounce)"
    received = datetime.fromtimestamp(message.received_at).strftime("%Y-%m-%d %H:%M:%S")
    lines = [f"{message.queue_id}  {received}  {message.size} octets  from {sender}"]
    for r in message.recipients:
        where = "local" if r.target.local else "remote"
        line = f"    {r.state.value:<9} <{r.target.address}> ({where})  attempts={r.attempts}"
        if r.state.value in ("queued", "deferred", "bouncing"):  # bouncing: the bounce's retry
            line += f"  next={_when(r.next_attempt)}"
        lines.append(line)
        if r.target.original != r.target.address:
            lines.append(f"              for <{r.target.original}>")
        if r.last_reply and (verbose or r.state.value in ("deferred", "bouncing")):
            lines.append(f"              last reply: {r.last_reply}")
    return "\n".join(lines)


async def _run(args: argparse.Namespace, store: SqliteQueueStore) -> int:
    await store.open()
    try:
        action = args.action
        if action == "list":
            messages = await store.list()
            for message in messages:
                print(format_message(message, verbose=False))
            print(f"{len(messages)} message(s) in the queue")
            return 0
        if action == "show":
            message = await store.get(args.id)
            if message is None:
                print(f"mailwright: no message {args.id} in the queue", file=sys.stderr)
                return EXIT_NOT_FOUND
            print(format_message(message, verbose=True))
            with store.open_body(args.id) as body:
                head = body.read(64 * 1024)
            end = head.find(b"\r\n\r\n")
            print("\n" + head[: end if end != -1 else len(head)].decode("utf-8", "replace"))
            return 0
        if action == "retry":
            count = await store.retry_now(args.id)
            print(f"{count} recipient(s) due now")
            return 0
        if action == "delete":
            if not await store.remove(args.id):
                print(f"mailwright: no message {args.id} in the queue", file=sys.stderr)
                return EXIT_NOT_FOUND
            print(f"deleted {args.id}")
            return 0
        raise AssertionError(action)  # pragma: no cover - argparse restricts the choices
    finally:
        await store.close()


def cmd_queue(args: argparse.Namespace) -> int:
    from mailwright.config import load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"mailwright: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    store = SqliteQueueStore(config.data_dir, role="admin")
    try:
        return asyncio.run(_run(args, store))
    except StorageError as exc:
        print(f"mailwright: queue error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def add_queue_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    queue = sub.add_parser("queue", help="list, show, retry or delete queued messages")
    actions = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help_text, id_mode in (
        ("list", "every message still queued, with each recipient's state", None),
        ("show", "one message: recipients, attempts, last replies and headers", "required"),
        ("retry", "make deferred recipients due now (one message, or all)", "optional"),
        ("delete", "remove a message from the queue", "required"),
    ):
        p = actions.add_parser(name, help=help_text)
        if id_mode == "required":
            p.add_argument("id", metavar="ID")
        elif id_mode == "optional":
            p.add_argument("id", metavar="ID", nargs="?")
        p.add_argument("--config", metavar="FILE", help="the server's configuration")
        p.set_defaults(func=cmd_queue)
