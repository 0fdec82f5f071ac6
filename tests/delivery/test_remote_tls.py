"""Outbound STARTTLS to a TLS sink with each delivery.tls setting (issue 4, client side)."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator

import pytest
import trustme

from mailwright.protocol.reply import Reply
from tests.helpers import RunningServer, wait_for
from tests.sink import Behaviour, SinkServer


@pytest.fixture(scope="module")
def sink_ca() -> trustme.CA:
    return trustme.CA()  # not trusted by the system: "verify" must refuse it unless told


@pytest.fixture(scope="module")
def sink_tls_context(sink_ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sink_ca.issue_cert("sink.test", "127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def tls_sink(sink_tls_context: ssl.SSLContext) -> Iterator[SinkServer]:
    server = SinkServer(tls=sink_tls_context)
    yield server
    server.stop()


@pytest.fixture
def plain_sink() -> Iterator[SinkServer]:
    server = SinkServer()
    yield server
    server.stop()


def config_for(sink: SinkServer, mode: str) -> str:
    return f"""
[routes]
"elsewhere.test" = "127.0.0.1:{sink.port}"
[delivery]
tls = "{mode}"
[queue]
retry = [3600]
"""


def send_forward(server: RunningServer) -> None:
    with smtplib.SMTP(server.host, server.port, timeout=10) as s:
        s.sendmail("a@remote.test", ["bob@example.test"], "Subject: tls\r\n\r\nsecret\r\n")


def deferred_reply(server: RunningServer) -> str | None:
    messages = server.call(lambda: server.app.store.list())
    if messages and messages[0].recipients[0].state.value == "deferred":
        return str(messages[0].recipients[0].last_reply)
    return None


@pytest.mark.parametrize("mode", ["opportunistic", "required"])
def test_starttls_is_used_when_offered(server_factory, tls_sink: SinkServer, mode: str) -> None:
    server = server_factory(config_for(tls_sink, mode))
    send_forward(server)
    [msg] = tls_sink.wait_for_messages(1)
    assert msg.tls
    assert msg.body.endswith(b"Subject: tls\r\n\r\nsecret\r\n")


def test_opportunistic_sends_in_plain_text_when_tls_is_not_offered(
    server_factory, plain_sink: SinkServer
) -> None:
    server = server_factory(config_for(plain_sink, "opportunistic"))
    send_forward(server)
    [msg] = plain_sink.wait_for_messages(1)
    assert not msg.tls


def test_opportunistic_goes_on_in_plain_text_after_a_454_on_the_same_connection(
    server_factory, tls_sink: SinkServer
) -> None:
    """RFC 3207 4: a 454 to STARTTLS leaves the plain-text session usable; no second connection."""
    tls_sink.default = Behaviour(starttls=Reply(454, "4.7.0", "TLS not available"))
    server = server_factory(config_for(tls_sink, "opportunistic"))
    send_forward(server)
    [msg] = tls_sink.wait_for_messages(1)
    assert not msg.tls
    assert tls_sink.connections == 1


def test_required_defers_rather_than_send_in_plain_text(
    server_factory, plain_sink: SinkServer
) -> None:
    server = server_factory(config_for(plain_sink, "required"))
    send_forward(server)
    reply = wait_for(lambda: deferred_reply(server))
    assert "4.7.10" in reply and "does not offer STARTTLS" in reply
    assert plain_sink.messages == []


def test_verify_defers_when_the_certificate_is_not_trusted(
    server_factory, tls_sink: SinkServer
) -> None:
    server = server_factory(config_for(tls_sink, "verify"))
    send_forward(server)
    reply = wait_for(lambda: deferred_reply(server))
    assert "4.7.5" in reply and "TLS" in reply
    assert tls_sink.messages == []


def test_a_route_can_require_tls_for_one_destination(
    server_factory, plain_sink: SinkServer
) -> None:
    server = server_factory(
        f"""
[routes]
"elsewhere.test" = {{ next_hop = "127.0.0.1:{plain_sink.port}", tls = "required" }}
[delivery]
tls = "opportunistic"
[queue]
retry = [3600]
"""
    )
    send_forward(server)
    reply = wait_for(lambda: deferred_reply(server))
    assert "4.7.10" in reply and "delivery.tls=required" in reply
    assert plain_sink.messages == []


def test_route_table_config_is_validated(tmp_path) -> None:
    from mailwright.config import parse_config
    from mailwright.errors import ConfigError

    config = parse_config(
        '[routes]\n"a.test" = { next_hop = "127.0.0.1:2600", tls = "verify" }\n"b.test" = { tls = "required" }\n',
        source="t",
        base_dir=tmp_path,
    )
    assert dict(config.routes) == {"a.test": "127.0.0.1:2600"}
    assert dict(config.route_tls) == {"a.test": "verify", "b.test": "required"}
    with pytest.raises(ConfigError, match="tls"):
        parse_config('[routes]\n"a.test" = { tls = "sometimes" }\n', source="t", base_dir=tmp_path)
    with pytest.raises(ConfigError, match="next_hop"):
        parse_config('[routes]\n"a.test" = { next_hop = 25 }\n', source="t", base_dir=tmp_path)


def test_verify_delivers_when_the_ca_file_trusts_the_certificate(
    server_factory, tls_sink: SinkServer, sink_ca: trustme.CA, tmp_path
) -> None:
    ca_file = tmp_path / "sink-ca.pem"
    sink_ca.cert_pem.write_to_path(str(ca_file))
    config = config_for(tls_sink, "verify").replace(
        'tls = "verify"', f'tls = "verify"\nca_file = "{ca_file}"'
    )
    server = server_factory(config)
    send_forward(server)
    [msg] = tls_sink.wait_for_messages(1)
    assert msg.tls
    assert msg.body.endswith(b"Subject: tls\r\n\r\nsecret\r\n")
