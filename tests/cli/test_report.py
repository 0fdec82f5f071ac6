"""Finding the address in a 251 or 551 reply, and the hints printed under them."""

from __future__ import annotations

import pytest

from mailwright.cli.report import referral_hints, suggested_address
from mailwright.model import Address
from mailwright.protocol.reply import Reply

CAROL = Address("carol", "example.test")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("User not local; please try <carol@newcorp.test>", "carol@newcorp.test"),
        ("User has moved to carol@newcorp.test.", "carol@newcorp.test"),
        # The recipient's own address, quoted first by many servers, is not the suggestion.
        ("<carol@example.test>: moved to <carol@newcorp.test>", "carol@newcorp.test"),
        ("<carol@example.test>: user has moved to carol@newcorp.test", "carol@newcorp.test"),
        ("moved (new address: c.new@mail.newcorp.test)", "c.new@mail.newcorp.test"),
        ("User not local", None),
        ("User not local; please try <not an address>", None),
        ("<carol@example.test> has moved", None),
    ],
)
def test_suggested_address(text: str, expected: str | None) -> None:
    found = suggested_address(Reply(551, "5.1.6", text), CAROL)
    assert (str(found) if found else None) == expected


def test_hints_only_for_251_and_551() -> None:
    assert referral_hints(Reply(550, "5.1.1", "No such user <x@y.test>"), CAROL, "en") == []
    assert referral_hints(Reply(251, "2.1.5", "will forward"), CAROL, "en") == [
        "    the server will forward this message to a mailbox elsewhere"
    ]
    assert referral_hints(Reply(551, "5.1.6", "User not local"), CAROL, "en") == [
        "    the server says this user is not local but names no address to try"
    ]
