"""DSN parameters (RFC 3461) from a real client, through the queue, to the next hop.

smtplib sends RET, ENVID, NOTIFY and ORCPT to a real server on loopback; the
queue keeps them across a restart; the sink peer receives them again when it
offers DSN, and none when it does not (RFC 3461 5.2.2).
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from pathlib import Path

from mailwright.protocol.reply import Reply
from tests.helpers import BASE_CONFIG, RunningServer, make_config, wait_for
from tests.sink import Behaviour, SinkServer


def routed(sink: SinkServer) -> str:
    return f'[routes]\n"elsewhere.test" = "127.0.0.1:{sink.port}"\n[queue]\nretry = [1]\n'


def send_with_dsn(server: RunningServer, rcpts: list[tuple[str, list[str]]]) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        client.ehlo("client.example")
        assert client.has_extn("dsn")
        code, _ = client.mail("sender@remote.test", ["RET=HDRS", "ENVID=QQ+2B314"])
        assert code == 250
        for address, options in rcpts:
            assert client.rcpt(address, options)[0] in (250, 251)
        assert client.data(b"Subject: dsn\r\n\r\nbody\r\n")[0] == 250


def test_dsn_parameters_are_passed_on_to_a_next_hop_that_offers_dsn(
    server_factory: Callable[..., RunningServer], sink: SinkServer
) -> None:
    """A forward (251) keeps NOTIFY and gets ORCPT = the address the client gave;
    a relayed recipient's ORCPT is passed on as it came, as xtext."""
    server = server_factory(routed(sink) + '[relay]\nnetworks = ["127.0.0.0/8"]\n')
    send_with_dsn(
        server,
        [
            ("bob@example.test", ["NOTIFY=SUCCESS,FAILURE"]),
            ("carl@elsewhere.test", ["NOTIFY=NEVER", "ORCPT=rfc822;Carl+2Bx@Old.test"]),
            ("dora@elsewhere.test", []),
        ],
    )
    [received] = sink.wait_for_messages(1)
    assert received.mail_params.keys() - {"SIZE"} == {"RET", "ENVID"}
    assert (received.mail_params["RET"], received.mail_params["ENVID"]) == ("HDRS", "QQ+2B314")
    params = dict(zip([str(r) for r in received.recipients], received.rcpt_params, strict=True))
    assert params == {
        "bob@elsewhere.test": {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;bob@example.test"},
        "carl@elsewhere.test": {"NOTIFY": "NEVER", "ORCPT": "rfc822;Carl+2Bx@Old.test"},
        "dora@elsewhere.test": {},
    }


def test_a_next_hop_without_dsn_gets_no_dsn_parameters(
    server_factory: Callable[..., RunningServer], sink: SinkServer
) -> None:
    sink.script(Behaviour(hide=frozenset({"DSN"})))
    server = server_factory(routed(sink))
    send_with_dsn(server, [("bob@example.test", ["NOTIFY=FAILURE", "ORCPT=rfc822;b@old.test"])])
    [received] = sink.wait_for_messages(1)
    assert received.mail_params.keys() == {"SIZE"}
    assert received.rcpt_params == ({},)


def test_dsn_parameters_survive_a_restart_of_the_server(tmp_path: Path, sink: SinkServer) -> None:
    """Queued while the next hop is down, delivered by a new server on the same queue."""
    sink.script(Behaviour(rcpt=Reply(451, "4.3.0", "Not now")))
    config = make_config(tmp_path, routed(sink).replace("retry = [1]", "retry = [600]"))
    first = RunningServer(config)
    try:
        send_with_dsn(first, [("bob@example.test", ["NOTIFY=DELAY", "ORCPT=rfc822;b@old.test"])])

        def deferred() -> bool:
            messages = first.call(lambda: first.app.store.list())
            return bool(messages) and messages[0].recipients[0].attempts >= 1

        wait_for(deferred)
    finally:
        first.stop()
    second = RunningServer(config)
    try:
        second.call(lambda: second.app.store.retry_now())
        [received] = sink.wait_for_messages(1)
        assert received.mail_params["ENVID"] == "QQ+2B314"
        assert received.rcpt_params == ({"NOTIFY": "DELAY", "ORCPT": "rfc822;b@old.test"},)
    finally:
        second.stop()


def test_members_of_an_alias_are_passed_on_without_success(
    server_factory: Callable[..., RunningServer], sink: SinkServer
) -> None:
    """RFC 3461 6.2.7.3: the alias's own "expanded" report answers SUCCESS; the members'
    next hop is not asked for success reports that would list them to the sender."""
    base = BASE_CONFIG.replace(
        "[aliases]\n", '[aliases]\n"list@example.test" = ["x@elsewhere.test", "y@elsewhere.test"]\n'
    )
    server = server_factory(routed(sink), base=base)
    send_with_dsn(server, [("list@example.test", ["NOTIFY=SUCCESS,FAILURE"])])
    [received] = sink.wait_for_messages(1)
    assert sorted(str(r) for r in received.recipients) == ["x@elsewhere.test", "y@elsewhere.test"]
    assert received.rcpt_params == ({"NOTIFY": "FAILURE", "ORCPT": "rfc822;list@example.test"},) * 2
