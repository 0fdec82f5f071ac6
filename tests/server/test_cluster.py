"""Several mailwright nodes on one PostgreSQL queue (docs/cluster.md), as real processes.

Mail sent to either node is delivered once (counted by Message-ID at a sink
peer and in the shared mailboxes); a node killed with SIGKILL mid-delivery
leaves its acknowledged mail to the other; a database that goes away gets
new mail refused with 451, and loses nothing that was acknowledged.
"""

from __future__ import annotations

import collections
import smtplib
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import psycopg
import pytest

from tests.helpers import ServerProcess, maildir_messages, wait_for
from tests.queue.postgresql import empty_queue, pg_database, server_url  # noqa: F401 - fixture
from tests.sink import SinkServer

NODE = """
hostname = "{name}.example.test"
data_dir = "{name}"
[smtp]
listen = ["127.0.0.1:0"]
[domains]
local = ["example.test"]
auto_mailbox = ["example.test"]
[relay]
networks = ["127.0.0.0/8"]
[routes]
"elsewhere.test" = "127.0.0.1:{sink_port}"
[queue]
backend = "postgresql"
url = "{url}"
node = "{name}"
lease = {lease}
retry = [1]
[delivery]
mailboxes_dir = "shared/mailboxes"
"""


@pytest.fixture
def url(pg_database: str) -> str:  # noqa: F811 - the module's database, emptied for each test
    empty_queue(pg_database)
    return pg_database


@pytest.fixture
def nodes() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for node in started:
        node.kill()


def start_node(
    tmp_path: Path, name: str, url: str, sink: SinkServer, nodes: list[ServerProcess], lease: float
) -> ServerProcess:
    path = tmp_path / f"{name}.toml"
    path.write_text(NODE.format(name=name, url=url, sink_port=sink.port, lease=lease))
    node = ServerProcess(path)
    nodes.append(node)
    return node


def message(marker: str, to: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "load@remote.test"
    mail["To"] = to
    mail["Subject"] = marker
    mail["Message-ID"] = f"<{marker}@cluster.test>"
    mail.set_content(f"{marker}\n" * 20)
    return mail


def send(node: ServerProcess, marker: str, to: str) -> None:
    with smtplib.SMTP(node.host, node.port, timeout=30) as client:
        client.send_message(message(marker, to), "load@remote.test", [to])


def queue_is_empty(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute("SELECT count(*) FROM messages").fetchone()
    return row is not None and row[0] == 0


def received_ids(sink: SinkServer) -> collections.Counter[str]:
    ids: collections.Counter[str] = collections.Counter()
    for received in list(sink.messages):
        for line in received.body.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                ids[line.split(b":", 1)[1].strip().decode()] += 1
                break
    return ids


@pytest.mark.parametrize("count", [2, 3])
def test_mail_sent_to_every_node_is_delivered_once_each_remote_and_local(
    tmp_path: Path, url: str, sink: SinkServer, nodes: list[ServerProcess], count: int
) -> None:
    cluster = [start_node(tmp_path, f"mx{n}", url, sink, nodes, lease=60) for n in range(count)]
    remote = [f"r{n}" for n in range(30)]
    local = [f"l{n}" for n in range(10)]
    for n, marker in enumerate(remote):
        send(cluster[n % count], marker, "bob@elsewhere.test")
    for n, marker in enumerate(local):
        send(cluster[n % count], marker, f"user{n % 3}@example.test")

    wait_for(lambda: queue_is_empty(url), timeout=60)  # every result recorded: nothing more
    ids = received_ids(sink)
    assert ids == collections.Counter({f"<{m}@cluster.test>": 1 for m in remote})
    shared = tmp_path / "shared"  # both nodes' [delivery] mailboxes_dir
    delivered = [
        body for user in range(3) for body in maildir_messages(shared, f"user{user}@example.test")
    ]
    subjects = sorted(
        line.split(b":", 1)[1].strip().decode()
        for body in delivered
        for line in body.split(b"\r\n")
        if line.startswith(b"Subject:")
    )
    assert subjects == sorted(local)  # each local message once, in the shared Maildirs
    assert not any((tmp_path / f"mx{n}" / "mailboxes").exists() for n in range(count))


def test_a_node_killed_mid_delivery_leaves_its_acknowledged_mail_to_the_other(
    tmp_path: Path, url: str, sink: SinkServer, nodes: list[ServerProcess]
) -> None:
    sink.end_of_data_delay = 0.5  # a slow peer: deliveries are in flight when the kill comes
    one = start_node(tmp_path, "mx1", url, sink, nodes, lease=2)
    markers = [f"k{n}" for n in range(40)]
    for marker in markers:
        send(one, marker, "bob@elsewhere.test")  # every one acknowledged (250) by mx1
    wait_for(lambda: sink.open_sessions >= 1 and len(sink.messages) >= 1, timeout=30)
    in_flight = sink.open_sessions
    one.proc.kill()  # SIGKILL: its claims stay until their leases lapse
    one.wait()
    start_node(tmp_path, "mx2", url, sink, nodes, lease=2)

    wait_for(lambda: queue_is_empty(url), timeout=90)
    ids = received_ids(sink)
    assert set(ids) == {f"<{m}@cluster.test>" for m in markers}  # nothing lost
    duplicates = sum(ids.values()) - len(markers)
    print(f"kill -9 mid-delivery: {in_flight} sessions in flight, {duplicates} duplicates")
    # At-least-once: only deliveries the dead node had under way may be repeated (each of
    # its connections carries one message at a time).
    assert duplicates <= max(in_flight, 1) + 1
    assert any(m.helo == "mx2.example.test" for m in sink.messages)  # the other took over


def test_the_database_going_away_under_load_refuses_new_mail_with_451_and_loses_nothing(
    tmp_path: Path, url: str, sink: SinkServer, nodes: list[ServerProcess]
) -> None:
    # A short lease: a claim whose answer a cut connection lost lapses soon (claims.py).
    one = start_node(tmp_path, "mx1", url, sink, nodes, lease=5)
    two = start_node(tmp_path, "mx2", url, sink, nodes, lease=5)
    database = url.rsplit("/", 1)[1]
    acknowledged: list[str] = []
    refusals: list[tuple[int, bytes]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(number: int) -> None:
        sent = 0
        while not stop.is_set():
            sent += 1
            marker = f"c{number}m{sent}"
            try:
                send((one, two)[number % 2], marker, "bob@elsewhere.test")
            except smtplib.SMTPResponseException as exc:
                with lock:
                    refusals.append((exc.smtp_code, exc.smtp_error))
                continue
            with lock:
                acknowledged.append(marker)

    def admin(sql: str) -> None:
        with psycopg.connect(server_url(), autocommit=True) as connection:
            connection.execute(sql)

    def cut_connections() -> None:
        admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE datname = '{database}' AND application_name LIKE 'mailwright%'"
        )

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(acknowledged) >= 20, timeout=60)
        cut_connections()  # every connection cut: the nodes reconnect on their own
        count = len(acknowledged)
        wait_for(lambda: len(acknowledged) >= count + 20, timeout=60)
        # Now the database refuses every connection for a while: new mail gets 451.
        admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        cut_connections()
        with pytest.raises(smtplib.SMTPDataError) as refused:
            send(one, "during-outage", "bob@elsewhere.test")
        assert refused.value.smtp_code == 451
        assert refused.value.smtp_error.startswith(b"4.3.0")
        admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        count = len(acknowledged)
        wait_for(lambda: len(acknowledged) >= count + 20, timeout=60)  # and accepted again
    finally:
        admin(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        stop.set()
        for thread in threads:
            thread.join(60)

    assert all(code == 451 for code, _ in refusals), refusals  # never 250, never 5xx
    wait_for(lambda: queue_is_empty(url), timeout=90)
    ids = received_ids(sink)
    missing = {f"<{m}@cluster.test>" for m in acknowledged} - set(ids)
    assert not missing  # every acknowledged message was delivered
    assert "<during-outage@cluster.test>" not in ids
