"""The admin API (``/api/v1/``) of a real server over real HTTP, and ``mailwright queue`` beside it.

Mail to elsewhere.test goes to a loopback port nobody listens on, so it defers and
stays; mail to sink.test goes to a sink the test scripts.  Every endpoint: the token
checked, 404 for ids that are not there, 400 with a message for bad query values.
"""

from __future__ import annotations

import json
import logging
import smtplib
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailwright.protocol.reply import Reply
from tests.helpers import AdminClient, RunningServer, wait_for
from tests.sink import Behaviour, SinkServer

TOKEN = "t0ken-for-tests"
UNKNOWN_ID = "0000000000000000"


def message(subject: str) -> bytes:
    return f"From: me@example.test\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n".encode()


@dataclass
class Admin:
    server: RunningServer
    api: AdminClient
    config_file: Path
    sink: SinkServer

    def send(self, to: str, subject: str = "hello") -> str:
        with smtplib.SMTP(self.server.host, self.server.port) as client:
            client.ehlo("client.test")
            client.mail("me@example.test")
            client.rcpt(to)
            code, text = client.data(message(subject))
        assert code == 250, text
        return text.decode().split()[-1]  # "Queued as ID"

    def queue(self, query: str = "") -> list[dict[str, Any]]:
        status, page = self.api.get(f"/api/v1/queue{query}")
        assert status == 200, page
        return list(page["messages"])

    def show(self, queue_id: str) -> dict[str, Any]:
        status, found = self.api.get(f"/api/v1/queue/{queue_id}")
        assert status == 200, found
        return dict(found)

    def wait_attempts(self, queue_id: str, attempts: int) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            shown = self.show(queue_id)
            return shown if shown["recipients"][0]["attempts"] >= attempts else None

        found = wait_for(reached)
        assert isinstance(found, dict)
        return found

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mailwright", "queue", *args, "--config", str(self.config_file)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture
def admin(
    server_factory: Callable[..., RunningServer],
    sink: SinkServer,
    closed_port: int,
    tmp_path: Path,
) -> Admin:
    (tmp_path / "token").write_text(TOKEN + "\n")
    server = server_factory(
        '[http]\nlisten = "127.0.0.1:0"\ntoken_file = "token"\n'
        f'[routes]\n"elsewhere.test" = "127.0.0.1:{closed_port}"\n'
        f'"sink.test" = "127.0.0.1:{sink.port}"\n'
        '[relay]\nnetworks = ["127.0.0.0/8"]\n'
    )
    assert server.app is not None and server.app.http is not None
    config_file = tmp_path / "cli.toml"
    config_file.write_text(f'hostname = "mx.example.test"\ndata_dir = "{server.data_dir}"\n')
    return Admin(server, AdminClient(*server.app.http.address, token=TOKEN), config_file, sink)


# ---------------------------------------------------------------- the token

ENDPOINTS = [
    ("GET", "/api/v1/queue"),
    ("GET", f"/api/v1/queue/{UNKNOWN_ID}"),
    ("POST", f"/api/v1/queue/{UNKNOWN_ID}/retry"),
    ("POST", f"/api/v1/queue/{UNKNOWN_ID}/hold"),
    ("POST", f"/api/v1/queue/{UNKNOWN_ID}/release"),
    ("DELETE", f"/api/v1/queue/{UNKNOWN_ID}"),
    ("POST", "/api/v1/queue/retry?domain=elsewhere.test"),
    ("GET", "/api/v1/explain/503"),
    ("GET", "/api/v1/replies"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_api_endpoint_needs_the_token(admin: Admin, method: str, path: str) -> None:
    bare = AdminClient(*admin.api.base.removeprefix("http://").rsplit(":", 1))
    for token in (None, "wrong-token"):
        status, answer = bare.request(method, path, token=token)
        assert status == 401
        assert "Bearer" in answer["error"]
    status, _answer = admin.api.request(method, path)
    assert status in (200, 404)


# ---------------------------------------------------------------- reading


def test_a_deferred_message_is_listed_with_its_last_reply(admin: Admin) -> None:
    queue_id = admin.send("x@elsewhere.test")
    shown = admin.wait_attempts(queue_id, 1)
    [listed] = admin.queue()
    assert set(listed) == {"id", "sender", "size", "arrived", "age", "recipients"}
    assert listed["id"] == queue_id and listed["sender"] == "me@example.test"
    assert listed["arrived"].endswith("Z") and isinstance(listed["age"], int)
    [rcpt] = listed["recipients"]
    assert set(rcpt) == {"address", "state", "attempts", "next_attempt", "last_reply", "relay"}
    assert rcpt["address"] == "x@elsewhere.test"
    assert rcpt["state"] == "deferred" and rcpt["attempts"] == 1 and rcpt["relay"] == "remote"
    assert rcpt["last_reply"]["code"] == 451 and rcpt["last_reply"]["enhanced"] == "4.4.1"
    assert "Subject: hello" in shown["headers"] and "body" not in shown
    [attempt] = shown["history"]
    assert attempt["recipient"] == "x@elsewhere.test"
    assert attempt["reply"] == rcpt["last_reply"]
    assert attempt["time"].endswith("Z")
    status, with_body = admin.api.get(f"/api/v1/queue/{queue_id}?body=1")
    assert status == 200 and "body of hello" in with_body["body"]


def test_filters_and_pages(admin: Admin) -> None:
    ids = [admin.send("x@elsewhere.test", f"m{n}") for n in range(3)]
    for queue_id in ids:
        admin.wait_attempts(queue_id, 1)
    assert [m["id"] for m in admin.queue("?state=deferred")] == ids
    assert admin.queue("?state=held") == []
    assert [m["id"] for m in admin.queue("?domain=ELSEWHERE.test")] == ids
    assert admin.queue("?domain=other.test") == []
    status, first = admin.api.get("/api/v1/queue?limit=2")
    assert status == 200 and [m["id"] for m in first["messages"]] == ids[:2]
    status, second = admin.api.get(f"/api/v1/queue?limit=2&cursor={first['next_cursor']}")
    assert [m["id"] for m in second["messages"]] == ids[2:]
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("state=bogus", "state"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=5000", "limit"),
        ("cursor=..%2F..", "cursor"),
        ("domain=bad..domain", "domain"),
    ],
)
def test_bad_query_values_get_400_saying_which(admin: Admin, query: str, names: str) -> None:
    status, answer = admin.api.get(f"/api/v1/queue?{query}")
    assert status == 400
    assert answer["error"].startswith(f"{names}:")


def test_other_bad_values_get_400(admin: Admin) -> None:
    status, answer = admin.api.post("/api/v1/queue/retry")
    assert status == 400 and answer["error"].startswith("domain:")
    status, answer = admin.api.get(f"/api/v1/queue/{UNKNOWN_ID}?body=2")
    assert status == 400 and answer["error"].startswith("body:")
    status, answer = admin.api.get("/api/v1/explain/503?lang=xx")
    assert status == 400 and answer["error"].startswith("lang:")


@pytest.mark.parametrize("queue_id", [UNKNOWN_ID, "not-an-id", "x" * 300])
def test_ids_not_in_the_queue_get_404(admin: Admin, queue_id: str) -> None:
    for method, path in [
        ("GET", ""),
        ("POST", "/retry"),
        ("POST", "/hold"),
        ("POST", "/release"),
        ("DELETE", ""),
    ]:
        status, answer = admin.api.request(method, f"/api/v1/queue/{queue_id}{path}")
        assert status == 404, (method, path)
        assert "no message" in answer["error"]


def test_unknown_api_paths_and_methods_answer_json(admin: Admin) -> None:
    status, answer = admin.api.get(f"/api/v1/queue/{UNKNOWN_ID}/extra/parts")
    assert status == 404 and answer["error"]
    status, answer = admin.api.request("PUT", "/api/v1/queue")
    assert status == 405 and answer["error"]


def test_explain_gives_the_reference_data(admin: Admin) -> None:
    status, answer = admin.api.get("/api/v1/explain/503")
    assert status == 200 and answer["code"] == 503 and answer["basic"]["rfc"]
    status, answer = admin.api.get("/api/v1/explain/451%204.4.1%20No%20answer?lang=zh")
    assert status == 200 and answer["enhanced_code"] == "4.4.1" and answer["lang"] == "zh"
    status, answer = admin.api.get("/api/v1/explain/999")
    assert status == 404 and answer["error"]


def test_replies_of_the_last_hour_by_code(admin: Admin) -> None:
    admin.send("x@elsewhere.test")
    status, answer = admin.api.get("/api/v1/replies")
    assert status == 200
    assert answer["replies"]["220"] == 1 and answer["replies"]["250"] >= 4
    assert answer["seconds"] >= 0


# ---------------------------------------------------------------- acting


def test_retry_makes_another_attempt_now(admin: Admin) -> None:
    queue_id = admin.send("x@elsewhere.test")
    admin.wait_attempts(queue_id, 1)
    status, answer = admin.api.post(f"/api/v1/queue/{queue_id}/retry")
    assert status == 200 and answer == {"id": queue_id, "action": "retry", "recipients": 1}
    shown = admin.wait_attempts(queue_id, 2)
    assert len(shown["history"]) == 2
    status, answer = admin.api.post("/api/v1/queue/retry?domain=elsewhere.test")
    assert status == 200 and answer["recipients"] == 1
    admin.wait_attempts(queue_id, 3)


def _held_is_not_delivered(admin: Admin, hold: Callable[[str], None]) -> str:
    """A message deferred by the sink is held; a later one to the same place is delivered
    while the held one stays: that proves holding, with nothing waited for by the clock."""
    admin.sink.script(Behaviour(rcpt=Reply(451, "4.3.0", "Not now")))
    held = admin.send("a@sink.test", "held")
    admin.wait_attempts(held, 1)
    hold(held)
    assert admin.show(held)["recipients"][0]["state"] == "held"
    assert admin.api.post(f"/api/v1/queue/{held}/retry")[1]["recipients"] == 0
    admin.send("b@sink.test", "after")
    [delivered] = admin.sink.wait_for_messages(1)
    assert b"Subject: after" in delivered.body
    shown = admin.show(held)
    assert shown["recipients"][0]["state"] == "held" and shown["recipients"][0]["attempts"] == 1
    assert [m["id"] for m in admin.queue("?state=held")] == [held]
    return held


def test_hold_and_release_through_the_api(admin: Admin) -> None:
    def hold(queue_id: str) -> None:
        status, answer = admin.api.post(f"/api/v1/queue/{queue_id}/hold")
        assert status == 200 and answer["recipients"] == 1

    held = _held_is_not_delivered(admin, hold)
    status, answer = admin.api.post(f"/api/v1/queue/{held}/release")
    assert status == 200 and answer["recipients"] == 1
    assert admin.show(held)["recipients"][0]["state"] == "deferred"
    admin.api.post(f"/api/v1/queue/{held}/retry")
    messages = admin.sink.wait_for_messages(2)
    assert b"Subject: held" in messages[1].body
    wait_for(lambda: admin.api.get(f"/api/v1/queue/{held}")[0] == 404)


def test_hold_and_release_through_the_cli(admin: Admin) -> None:
    def hold(queue_id: str) -> None:
        run = admin.cli("hold", queue_id)
        assert run.returncode == 0 and run.stdout.strip() == "1 recipient(s) held", run.stderr

    held = _held_is_not_delivered(admin, hold)
    run = admin.cli("release", held)
    assert run.returncode == 0 and run.stdout.strip() == "1 recipient(s) released"
    assert admin.show(held)["recipients"][0]["state"] == "deferred"
    assert admin.cli("hold", UNKNOWN_ID).returncode == 1


def test_delete_sends_no_bounce_and_logs_who(
    admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailwright.http")
    queue_id = admin.send("x@elsewhere.test")
    admin.wait_attempts(queue_id, 1)
    status, answer = admin.api.request("DELETE", f"/api/v1/queue/{queue_id}")
    assert status == 200 and answer == {"id": queue_id, "action": "delete"}
    assert admin.api.get(f"/api/v1/queue/{queue_id}")[0] == 404
    assert admin.queue() == []  # no bounce was queued to the sender
    [line] = [r.getMessage() for r in caplog.records if "event=queue-delete" in r.getMessage()]
    assert f"id={queue_id}" in line and "by=http:127.0.0.1" in line


# ---------------------------------------------------------------- the CLI's JSON


def _without_age(shape: dict[str, Any]) -> dict[str, Any]:
    """Ages are whole seconds counted when each answer was made: compared apart."""
    for message in shape.get("messages", [shape]):
        assert isinstance(message.pop("age"), int)
    return shape


def test_queue_list_and_show_json_have_the_api_shapes(admin: Admin) -> None:
    first = admin.send("x@elsewhere.test", "one")
    second = admin.send("y@elsewhere.test", "two")
    admin.wait_attempts(first, 1)
    admin.wait_attempts(second, 1)  # both deferred for a minute: nothing moves meanwhile
    run = admin.cli("list", "--json")
    assert run.returncode == 0, run.stderr
    _status, page = admin.api.get("/api/v1/queue")
    assert _without_age(json.loads(run.stdout)) == _without_age(page)
    run = admin.cli("show", first, "--json")
    assert run.returncode == 0, run.stderr
    assert _without_age(json.loads(run.stdout)) == _without_age(admin.show(first))
    missing = admin.cli("show", UNKNOWN_ID, "--json")
    assert missing.returncode == 1 and "no message" in missing.stderr
