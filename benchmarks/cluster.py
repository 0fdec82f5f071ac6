"""Two mailwright nodes on one PostgreSQL queue against one node: messages per second in sum.

    python benchmarks/cluster.py [--count 4000] [--rounds 2]

Issue 18 asks that two nodes on this machine be no slower in sum than one.  Each
round runs, on a fresh database each time: one node taking 20 sessions of 1 KiB
messages (many per connection, as the ``1k-20`` load of run.py), then two nodes
(``node = "a"`` and ``"b"``, one shared ``[delivery] mailboxes_dir``) taking 10
sessions each at the same moment.  The figure is messages divided by the time from
the first connection until the last message is in the shared Maildir: stored, not
only acknowledged, since the nodes share the delivery work through the queue.
Prints figures, asserts nothing.  Loopback only; every server is stopped at the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import random
import tempfile
import time
from pathlib import Path

import deps
from loads import smtp_source
from servers import LOCAL_DOMAIN, Mailwright, MailwrightPostgres, ServerError, count_files


class ClusterNode(MailwrightPostgres):
    """One node of the cluster: its own data_dir, the shared mailboxes and database."""

    def __init__(self, workdir: Path, *, node: str, database: str, mailboxes: Path) -> None:
        super().__init__(workdir)
        self.database = database
        self.node = node
        self.shared_mailboxes = mailboxes

    def config(self) -> str:
        extra = f'node = "{self.node}"\n[delivery]\nmailboxes_dir = "{self.shared_mailboxes}"\n'
        return super().config() + extra

    def start(self) -> None:  # the database is made once for the cluster, not per node
        Mailwright.start(self)

    def stop(self) -> None:
        Mailwright.stop(self)


def measure(root: Path, nodes: int, count: int, processes: str | int = "auto") -> float:
    """Messages stored per second with ``nodes`` nodes sharing 20 sessions."""
    database = f"mailwright_cluster_{random.getrandbits(32):08x}"
    cluster = [
        ClusterNode(root / name, node=name, database=database, mailboxes=root / "mailboxes")
        for name in "abc"[:nodes]
    ]
    for node in cluster:
        node.processes = processes
    first = cluster[0]
    first._admin(f'CREATE DATABASE "{database}"')
    try:
        for node in cluster:
            node.workdir.mkdir(parents=True)
            node.start()
        sessions, share = 20 // nodes, count // nodes
        new = root / "mailboxes" / LOCAL_DOMAIN / "user" / "new"
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(nodes) as pool:
            runs = list(
                pool.map(
                    lambda node: smtp_source(
                        node.port,
                        sessions=sessions,
                        count=share,
                        size=1024,
                        reuse=True,
                        recipient=node.recipient,
                        timeout=600,
                    ),
                    cluster,
                )
            )
        for run in runs:
            if run.returncode != 0:
                raise ServerError(f"smtp-source failed: {run.error}")
        deadline = time.monotonic() + 300
        while count_files(new) < share * nodes and time.monotonic() < deadline:
            time.sleep(0.05)
        return share * nodes / (time.monotonic() - started)
    finally:
        for node in cluster:
            node.stop()
        first._admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=4000, help="messages per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--processes", default="auto", help='[smtp] processes of each node (default "auto")'
    )
    args = parser.parse_args()
    deps.require_tool("smtp-source")
    for round_ in range(1, args.rounds + 1):
        for nodes in (1, 2):
            with tempfile.TemporaryDirectory(prefix="mailwright-cluster-") as folder:
                processes = int(args.processes) if args.processes.isdigit() else args.processes
                rate = measure(Path(folder), nodes, args.count, processes)
            print(f"round {round_}: {nodes} node(s), 20 sessions: {rate:,.0f} msg/s stored")


if __name__ == "__main__":
    main()
