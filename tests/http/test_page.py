"""The queue page in a real browser: Debian's chromium, headless, driven by Playwright for Python.

mailwright routes elsewhere.test to a loopback port nobody listens on, so the mail
defers.  The test opens the page, gives the token, sees the deferred message and the
explanation of its last reply, retries it (the attempt count grows), holds it,
deletes it, and checks the queue through the API afterwards.

With ``MAILWRIGHT_SCREENSHOT=1`` the screenshot goes to docs/operations-queue.png
(as docs/operations.md shows it); otherwise to the test's temporary folder.
"""

from __future__ import annotations

import os
import shutil
import smtplib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import AdminClient, RunningServer, wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TOKEN = "browser-t0ken"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def browser_tools() -> Any:
    """playwright.sync_api, or a skip naming what is missing (run-time, so CI sees it)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("needs chromium (apt-get install chromium)")
    try:
        import playwright.sync_api
    except ImportError:
        pytest.skip("needs playwright (pip install playwright)")
    return playwright.sync_api


def test_the_queue_page_shows_explains_and_acts(
    server_factory: Callable[..., RunningServer], closed_port: int, tmp_path: Path
) -> None:
    browser_tools()  # before starting anything
    (tmp_path / "token").write_text(TOKEN + "\n")
    server = server_factory(
        '[http]\nlisten = "127.0.0.1:0"\ntoken_file = "token"\n'
        f'[routes]\n"elsewhere.test" = "127.0.0.1:{closed_port}"\n'
        '[relay]\nnetworks = ["127.0.0.0/8"]\n'
    )
    assert server.app is not None and server.app.http is not None
    api = AdminClient(*server.app.http.address, token=TOKEN)
    with smtplib.SMTP(server.host, server.port) as client:
        client.sendmail(
            "me@example.test",
            ["x@elsewhere.test"],
            b"From: me@example.test\r\nSubject: for the browser\r\n\r\nhello\r\n",
        )

    def deferred() -> dict[str, object] | None:
        messages = api.get("/api/v1/queue")[1]["messages"]
        return messages[0] if messages and messages[0]["recipients"][0]["attempts"] else None

    message = wait_for(deferred)
    assert isinstance(message, dict)
    queue_id = message["id"]
    last = message["recipients"][0]["last_reply"]  # type: ignore[index]
    explained = api.get(f"/api/v1/explain/{last['code']}%20{last['enhanced']}")[1]

    tools = browser_tools()
    expect = tools.expect
    with tools.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("dialog", lambda dialog: dialog.accept())
            page.goto(f"{api.base}/")
            # The token, asked once, kept in sessionStorage for the browser session.
            page.fill("#token", TOKEN)
            page.click("#token-form button[type=submit]")
            expect(page.locator("#token-form")).to_be_hidden()
            assert page.evaluate("sessionStorage.getItem('mailwright-token')") == TOKEN

            row = page.locator(f"tr[data-id='{queue_id}']")
            expect(row.locator("td.state")).to_have_text("deferred")
            expect(row.locator("td.attempts")).to_have_text("1")
            expect(row.locator("td.last-reply .reply-code")).to_have_text("451 4.4.1")
            expect(row.locator("td.last-reply .explanation")).to_have_text(explained["summary"])

            row.locator("button.id").click()
            expect(page.locator("#history tbody tr")).to_have_count(1)
            expect(page.locator("#detail-headers")).to_contain_text("Subject: for the browser")

            row.locator("button.action-retry").click()
            expect(row.locator("td.attempts")).to_have_text("2", timeout=20_000)
            expect(page.locator("#history tbody tr")).to_have_count(2)

            row.locator("button.action-hold").click()
            expect(row.locator("td.state")).to_have_text("held")
            expect(row.locator("button.action-release")).to_be_visible()
            page.locator("#history .reply-code").first.click()  # the explanation panel
            expect(page.locator("#explain")).to_be_visible()
            expect(page.locator("#replies tbody tr[data-code='250']")).to_have_count(1)
            shot = (
                DOCS / "operations-queue.png"
                if os.environ.get("MAILWRIGHT_SCREENSHOT") == "1"
                else tmp_path / "operations-queue.png"
            )
            page.screenshot(path=str(shot), full_page=True)

            row.locator("button.action-delete").click()
            expect(row).to_have_count(0)
            expect(page.locator("#queue-empty")).to_be_visible()
        finally:
            browser.close()

    status, page_of_queue = api.get("/api/v1/queue")
    assert status == 200 and page_of_queue == {"messages": [], "next_cursor": None}
    assert api.get(f"/api/v1/queue/{queue_id}")[0] == 404
