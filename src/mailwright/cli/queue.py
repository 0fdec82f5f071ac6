"""``mailwright queue``: look at and act on the queue of a running (or stopped) server.

Works beside a running server: it opens the same queue (SQLite, or the
PostgreSQL one of ``[queue] backend``) in the admin role, which never touches
the server's claims.  ``retry`` makes recipients due now; the server's worker
picks them up at its next look at the queue (a PostgreSQL queue wakes every
node at once).  ``hold`` puts a message aside (never delivered, never expired)
until ``release``.  ``list --json`` and ``show --json`` print the JSON of the
admin API (http/shapes.py), so one script reads both.

Run as root (``sudo mailwright queue ...``) on a data_dir that belongs to the
service's account, it first becomes that account (``become_owner_of``): the
account controls every name in data_dir, and root must not open files there
that it could have replaced with links to /etc/shadow.

What it prints came from the network (addresses, remote replies, headers), and
an operator reads it on a terminal: every non-printable code point is escaped
(``logfmt.printable``), so no ESC sequence or line separator reaches the screen.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures.thread  # noqa: F401 - imported before dropping root, see below
import json
import logging
import os
import pwd
import sys
import time
from datetime import datetime
from pathlib import Path

from mailwright.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    Subcommands,
    add_command,
    load_config_or_say_why,
)
from mailwright.errors import StorageError
from mailwright.http.shapes import page_shape, read_detail
from mailwright.logfmt import kv, printable
from mailwright.queue.base import QueuedMessage, QueueStore
from mailwright.queue.choose import build_queue_store

EXIT_NOT_FOUND = 1

log = logging.getLogger("mailwright")


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
    return "\n".join(printable(line) for line in lines)


def format_headers(head: bytes) -> str:
    """The header block at the start of ``head``, one printable line per header line."""
    end = head.find(b"\r\n\r\n")
    text = head[: end if end != -1 else len(head)].decode("utf-8", "replace")
    return "\n".join(printable(line) for line in text.split("\r\n"))


def become_owner_of(data_dir: Path) -> int | None:
    """As root, switch the whole process to the owner of ``data_dir`` for good.

    Why not open the queue as root and fix owners afterwards: whoever owns
    data_dir can replace any name in it with a link, and SQLite opens its
    -wal and -shm files by name (chowning them, as root, to the database's
    owner).  As that owner, a planted link reaches nothing the owner could
    not reach anyway, and every file created has the owner the server needs.
    The groups are the owner's own (its primary group and those it is listed
    in); the switch cannot be undone (setuid with the saved id dropped too).
    Returns the uid switched to, or None when nothing changed (not root, the
    directory is root's, or it is missing and the store will say so).

    Python's own files must stay readable afterwards: modules this command
    imports later on are imported above, before the switch (an interpreter
    installed in root's home, mode 0700, can no longer read them after it).
    """
    if os.geteuid() != 0:
        return None
    try:
        info = os.stat(data_dir)
    except FileNotFoundError:
        return None
    if info.st_uid == 0:
        return None
    try:
        account = pwd.getpwuid(info.st_uid)
    except KeyError:  # a uid with no name: its directory's group, no others
        gid, groups = info.st_gid, [info.st_gid]
    else:
        gid, groups = account.pw_gid, os.getgrouplist(account.pw_name, account.pw_gid)
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(info.st_uid)
    return info.st_uid


async def _run(args: argparse.Namespace, store: QueueStore) -> int:
    await store.open()
    try:
        action = args.action
        if action == "list":
            messages = await store.list()
            if args.json:
                print(json.dumps(page_shape(messages, None), indent=2))
                return EXIT_OK
            for message in messages:
                print(format_message(message, verbose=False))
            print(f"{len(messages)} message(s) in the queue")
            return EXIT_OK
        if action == "show" and args.json:
            detail = await read_detail(store, args.id, body=False)
            if detail is None:
                return _not_found(args.id)
            print(json.dumps(detail, indent=2))
            return EXIT_OK
        if action == "show":
            found = await store.get(args.id)
            if found is None:
                print(f"mailwright: no message {args.id} in the queue", file=sys.stderr)
                return EXIT_NOT_FOUND
            print(format_message(found, verbose=True))
            async with store.read_body(args.id) as body:
                head = await body.read(64 * 1024)
            print("\n" + format_headers(head))
            return EXIT_OK
        if action == "retry":
            count = await store.retry_now(args.id)
            print(f"{count} recipient(s) due now")
            return EXIT_OK
        if action == "delete":
            if not await store.remove(args.id):
                return _not_found(args.id)
            log.info(kv(event="queue-delete", id=args.id, by=_who()))
            print(f"deleted {args.id}")
            return EXIT_OK
        if action in ("hold", "release"):
            change = store.hold if action == "hold" else store.release
            changed = await change(args.id)
            if changed is None:
                return _not_found(args.id)
            log.info(kv(event=f"queue-{action}", id=args.id, recipients=changed, by=_who()))
            print(f"{changed} recipient(s) {'held' if action == 'hold' else 'released'}")
            return EXIT_OK
        raise AssertionError(action)  # pragma: no cover - argparse restricts the choices
    finally:
        await store.close()


def _not_found(queue_id: str) -> int:
    print(f"mailwright: no message {printable(queue_id)} in the queue", file=sys.stderr)
    return EXIT_NOT_FOUND


def _who() -> str:
    try:
        return f"cli:{pwd.getpwuid(os.getuid()).pw_name}"
    except KeyError:
        return f"cli:uid={os.getuid()}"


def run_queue(args: argparse.Namespace) -> int:
    config = load_config_or_say_why(args.config)
    if config is None:
        return EXIT_USAGE
    if config.queue.backend == "sqlite":  # the PostgreSQL queue has no files here
        try:
            become_owner_of(config.data_dir)
        except OSError as exc:
            print(
                f"mailwright: cannot switch to the owner of {config.data_dir}: {exc}",
                file=sys.stderr,
            )
            return EXIT_USAGE
    store = build_queue_store(config, role="admin")
    try:
        return asyncio.run(_run(args, store))
    except StorageError as exc:
        print(f"mailwright: queue error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def add_queue_parser(subcommands: Subcommands) -> None:
    """Register ``queue`` and its actions; each runs ``run_queue``."""
    queue = add_command(
        subcommands, "queue", None, help="list, show, retry, hold, release or delete queued mail"
    )
    actions = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, help_text, id_mode in (
        ("list", "every message still queued, with each recipient's state", None),
        ("show", "one message: recipients, attempts, last replies and headers", "required"),
        ("retry", "make deferred recipients due now (one message, or all)", "optional"),
        ("hold", "put a message aside: never delivered, never expired", "required"),
        ("release", "put a held message back on its schedule", "required"),
        ("delete", "remove a message from the queue (no bounce)", "required"),
    ):
        p = actions.add_parser(name, help=help_text)
        if id_mode == "required":
            p.add_argument("id", metavar="ID")
        elif id_mode == "optional":
            p.add_argument("id", metavar="ID", nargs="?")
        p.add_argument("--config", metavar="FILE", help="the server's configuration")
        if name in ("list", "show"):
            p.add_argument("--json", action="store_true", help="the admin API's JSON shapes")
        p.set_defaults(func=run_queue)
