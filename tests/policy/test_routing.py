"""Recipient routing: each rule of the issue, case-insensitivity, and address tricks."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailwright.config import Config, MailboxConfig, parse_config
from mailwright.delivery.maildir import mailbox_path
from mailwright.model import Address
from mailwright.policy import RecipientDecision, Router, unique_targets
from mailwright.queue.base import Target

CONFIG = """\
[domains]
local = ["example.test", "auto.test"]
auto_mailbox = ["auto.test"]
[mailboxes]
"alice@example.test" = {}
"erin@example.test" = {}
[aliases]
"team@example.test" = ["alice@example.test", "dave@partner.test"]
"all@example.test" = ["team@example.test", "erin@example.test", "Alice@Example.test"]
"fwd-alias@example.test" = ["bob@example.test"]
"abuse@example.test" = ["postmaster@example.test"]
[forward]
"bob@example.test" = "bob@elsewhere.test"
"robert@example.test" = "alice@example.test"
[relocated]
"carol@example.test" = "carol@newcorp.test"
"""


def a(text: str) -> Address:
    return Address.from_text(text)


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(parse_config(CONFIG, source="test", base_dir=Path("/srv")))


def route(router: Router, rcpt: str | Address, *, may_relay: bool = False) -> RecipientDecision:
    address = a(rcpt) if isinstance(rcpt, str) else rcpt
    return router.route_recipient(address, may_relay=may_relay)


def reply_line(decision: RecipientDecision) -> str:
    return str(decision.reply)


def destinations(decision: RecipientDecision) -> list[tuple[str, bool]]:
    return [(str(t.address), t.local) for t in decision.targets]


# ---------------------------------------------------------------- the rules, in order


def test_mailbox_is_accepted_and_goes_to_its_maildir(router):
    decision = route(router, "alice@example.test")
    assert reply_line(decision) == "250 2.1.5 Ok"
    assert decision.targets == (Target(a("alice@example.test"), a("alice@example.test"), True),)
    assert decision.accepted


def test_alias_expands_to_local_and_remote_targets(router):
    decision = route(router, "team@example.test")
    assert reply_line(decision) == "250 2.1.5 Ok"
    assert destinations(decision) == [("alice@example.test", True), ("dave@partner.test", False)]
    assert {t.original for t in decision.targets} == {a("team@example.test")}


def test_forward_is_accepted_with_251_and_relayed_to_the_target(router):
    decision = route(router, "bob@example.test")
    assert reply_line(decision) == "251 2.1.5 User not local; will forward to <bob@elsewhere.test>"
    assert decision.targets == (Target(a("bob@elsewhere.test"), a("bob@example.test"), False),)


def test_forward_to_a_local_mailbox_delivers_there(router):
    decision = route(router, "robert@example.test")
    assert reply_line(decision) == "251 2.1.5 User not local; will forward to <alice@example.test>"
    assert destinations(decision) == [("alice@example.test", True)]


def test_relocated_is_refused_with_551_and_the_new_address(router):
    decision = route(router, "carol@example.test")
    assert reply_line(decision) == "551 5.1.6 User not local; please try <carol@newcorp.test>"
    assert decision.targets == ()
    assert not decision.accepted


@pytest.mark.parametrize("local_part", ["postmaster", "Postmaster", "POSTMASTER", "pOsTmAsTeR"])
def test_postmaster_of_any_local_domain_is_always_accepted(router, local_part):
    decision = route(router, f"{local_part}@Example.TEST")
    assert reply_line(decision) == "250 2.1.5 Ok"
    assert destinations(decision) == [("postmaster@example.test", True)]


def test_alias_to_postmaster_reaches_the_postmaster_maildir(router):
    assert destinations(route(router, "abuse@example.test")) == [("postmaster@example.test", True)]


def test_unknown_local_user_is_refused_with_550_5_1_1(router):
    decision = route(router, "nobody@example.test", may_relay=True)
    assert reply_line(decision) == "550 5.1.1 Mailbox unavailable: no such user here"
    assert decision.targets == ()


def test_remote_recipient_without_relay_permission_is_denied(router):
    decision = route(router, "someone@elsewhere.test", may_relay=False)
    assert reply_line(decision) == "550 5.7.1 Relaying denied"
    assert decision.targets == ()


def test_remote_recipient_with_relay_permission_is_queued_for_smtp(router):
    decision = route(router, "someone@elsewhere.test", may_relay=True)
    assert reply_line(decision) == "250 2.1.5 Ok"
    assert decision.targets == (
        Target(a("someone@elsewhere.test"), a("someone@elsewhere.test"), False),
    )


def test_operator_configured_remote_targets_do_not_need_relay_permission(router):
    assert route(router, "bob@example.test", may_relay=False).accepted
    assert ("dave@partner.test", False) in destinations(
        route(router, "team@example.test", may_relay=False)
    )


# ---------------------------------------------------------------- case and spelling


@pytest.mark.parametrize(
    "rcpt",
    ["ALICE@EXAMPLE.TEST", "Alice@example.test", "alice@Example.Test", "alice@example.test."],
)
def test_local_parts_and_domains_compare_case_insensitively(router, rcpt):
    decision = route(router, rcpt)
    assert reply_line(decision) == "250 2.1.5 Ok"
    assert destinations(decision) == [("alice@example.test", True)]
    assert decision.targets[0].original == a(rcpt)


def test_domain_case_does_not_turn_a_local_domain_into_a_relay(router):
    decision = route(router, "nobody@EXAMPLE.test", may_relay=True)
    assert decision.reply.code == 550
    assert decision.targets == ()


def test_is_local_domain_ignores_case_and_trailing_dot(router):
    assert router.is_local_domain("EXAMPLE.test.")
    assert not router.is_local_domain("elsewhere.test")


# ---------------------------------------------------------------- tricks never relay


TRICKS = [
    Address("user%elsewhere.test", "example.test"),
    Address("user%elsewhere.test", "auto.test"),
    Address("elsewhere.test!user", "example.test"),
    Address("elsewhere.test!user", "auto.test"),
    Address("a@b", "example.test"),  # "a@b"@example.test, quoting already removed
    Address("a@elsewhere.test", "auto.test"),
    Address("alice@example.test", "auto.test"),
    Address("@relay.test:user@elsewhere.test", "example.test"),
    Address("../../etc/passwd", "auto.test"),
    Address(".hidden", "auto.test"),
    Address("a/b", "auto.test"),
    Address("a..b", "auto.test"),
]


@pytest.mark.parametrize("rcpt", TRICKS, ids=str)
@pytest.mark.parametrize("may_relay", [False, True])
def test_address_tricks_in_local_domains_never_relay_or_escape(router, rcpt, may_relay):
    decision = route(router, rcpt, may_relay=may_relay)
    assert str(decision.reply) == "550 5.1.1 Mailbox unavailable: no such user here"
    assert decision.targets == ()


def test_source_route_is_judged_by_its_final_domain_only(router):
    # <@relay.test:user@elsewhere.test> reaches the router as user@elsewhere.test.
    decision = route(router, "user@elsewhere.test", may_relay=False)
    assert str(decision.reply) == "550 5.7.1 Relaying denied"


def test_quoted_local_part_cannot_spell_another_configured_address(router):
    # '"alice@example.test"@example.test' must not reach alice.
    decision = route(router, Address("alice@example.test", "example.test"))
    assert decision.reply.code == 550


# ---------------------------------------------------------------- alias expansion


def test_nested_aliases_expand_recursively_without_duplicates(router):
    decision = route(router, "all@example.test")
    assert reply_line(decision) == "250 2.1.5 Ok"
    assert destinations(decision) == [
        ("alice@example.test", True),
        ("dave@partner.test", False),
        ("erin@example.test", True),
    ]


def test_alias_through_a_forward_entry_follows_the_forward(router):
    decision = route(router, "fwd-alias@example.test")
    assert reply_line(decision) == "250 2.1.5 Ok"
    assert destinations(decision) == [("bob@elsewhere.test", False)]


def make_router(
    aliases: dict[str, tuple[str, ...]],
    *,
    mailboxes: tuple[str, ...] = ("alice@example.test",),
    forward: dict[str, str] | None = None,
    relocated: dict[str, str] | None = None,
    max_alias_depth: int | None = None,
) -> Router:
    """A Router from a Config built in code: the router must cope without parse_config's checks."""
    config = Config(
        local_domains=frozenset({"example.test"}),
        mailboxes={m: MailboxConfig() for m in mailboxes},
        aliases={key: tuple(map(Address.from_text, ts)) for key, ts in aliases.items()},
        forward={key: Address.from_text(t) for key, t in (forward or {}).items()},
        relocated={key: Address.from_text(t) for key, t in (relocated or {}).items()},
    )
    if max_alias_depth is None:
        return Router(config)
    return Router(config, max_alias_depth=max_alias_depth)


def test_alias_loop_with_no_other_target_is_refused_and_explained():
    router = make_router(
        {"a@example.test": ("b@example.test",), "b@example.test": ("a@example.test",)}
    )
    decision = route(router, "a@example.test")
    assert str(decision.reply) == "550 5.1.1 Mailbox unavailable: no such user here"
    assert "loop at a@example.test" in decision.reason


def test_alias_loop_beside_a_real_mailbox_delivers_to_the_mailbox_once():
    router = make_router(
        {
            "a@example.test": ("b@example.test", "alice@example.test"),
            "b@example.test": ("a@example.test", "ALICE@example.test"),
        }
    )
    decision = route(router, "a@example.test")
    assert str(decision.reply) == "250 2.1.5 Ok"
    assert destinations(decision) == [("alice@example.test", True)]
    assert "loop" in decision.reason


def test_alias_to_itself_is_a_loop():
    router = make_router({"me@example.test": ("me@example.test",)})
    assert route(router, "me@example.test").reply.code == 550


def test_forward_loop_is_refused():
    router = make_router(
        {}, forward={"x@example.test": "y@example.test", "y@example.test": "x@example.test"}
    )
    decision = route(router, "x@example.test")
    assert decision.reply.code == 550
    assert decision.targets == ()


def chain(length: int) -> dict[str, tuple[str, ...]]:
    """a0 -> a1 -> ... -> a<length-1> -> alice: ``length`` aliases deep."""
    links = {f"a{i}@example.test": (f"a{i + 1}@example.test",) for i in range(length - 1)}
    links[f"a{length - 1}@example.test"] = ("alice@example.test",)
    return links


def test_alias_chain_within_the_depth_limit_is_followed():
    router = make_router(chain(5), max_alias_depth=5)
    assert destinations(route(router, "a0@example.test")) == [("alice@example.test", True)]


def test_alias_chain_beyond_the_depth_limit_is_cut_and_refused():
    router = make_router(chain(6), max_alias_depth=5)
    decision = route(router, "a0@example.test")
    assert decision.reply.code == 550
    assert "alias depth limit 5 reached at a5@example.test" in decision.reason


def test_alias_to_only_unknown_local_users_is_refused_not_silently_dropped():
    router = make_router({"team@example.test": ("ghost@example.test", "phantom@example.test")})
    decision = route(router, "team@example.test")
    assert str(decision.reply) == "550 5.1.1 Mailbox unavailable: no such user here"
    assert "no mailbox ghost@example.test" in decision.reason


def test_alias_with_some_unknown_users_delivers_the_rest_and_says_why():
    router = make_router({"team@example.test": ("ghost@example.test", "alice@example.test")})
    decision = route(router, "team@example.test")
    assert destinations(decision) == [("alice@example.test", True)]
    assert decision.reason == "no mailbox ghost@example.test"


def test_alias_to_a_relocated_address_skips_it():
    router = make_router(
        {"team@example.test": ("carol@example.test",)},
        relocated={"carol@example.test": "carol@newcorp.test"},
    )
    decision = route(router, "team@example.test")
    assert decision.reply.code == 550
    assert "carol@example.test is relocated" in decision.reason


def test_mailbox_wins_over_other_entries_for_the_same_address():
    router = make_router(
        {"alice@example.test": ("x@remote.test",)},
        forward={"alice@example.test": "y@remote.test"},
    )
    assert destinations(route(router, "alice@example.test")) == [("alice@example.test", True)]


def test_unique_targets_merges_copies_across_recipients(router):
    targets = (
        route(router, "team@example.test").targets + route(router, "alice@example.test").targets
    )
    assert [str(t.address) for t in unique_targets(targets)] == [
        "alice@example.test",
        "dave@partner.test",
    ]


# ---------------------------------------------------------------- auto mailboxes


@pytest.mark.parametrize(
    "local_part", ["anyone", "First.Last", "user+tag", "a_b-c", "0", "x" * 64, "José", "Ünï"]
)
def test_auto_mailbox_accepts_safe_local_parts(router, local_part):
    decision = route(router, f"{local_part}@auto.test")
    assert str(decision.reply) == "250 2.1.5 Ok"
    assert destinations(decision) == [(f"{local_part.lower()}@auto.test", True)]


@pytest.mark.parametrize(
    "local_part",
    [
        "user%host",
        "host!user",
        "a/b",
        "..",
        ".hidden",
        "-dash",
        "a..b",
        "a b",
        '"q"',
        "x" * 65,
        "_under",
        "a\\b",
        "a\u2215b",  # DIVISION SLASH looks like / but must not pass either
        "a\x00b",
        "tab\there",
        "\u0130",  # İ is safe, but its lower case "i" + U+0307 (a combining mark) is not
        "Ab\u0130",
    ],
)
def test_auto_mailbox_refuses_unsafe_local_parts(router, local_part):
    decision = route(router, Address(local_part, "auto.test"), may_relay=True)
    assert str(decision.reply) == "550 5.1.1 Mailbox unavailable: no such user here"
    assert decision.targets == ()


def test_auto_mailbox_does_not_apply_to_other_local_domains(router):
    assert route(router, "anyone@example.test").reply.code == 550


# ---------------------------------------------------------------- mailbox_path


def test_mailbox_path_is_data_dir_mailboxes_domain_local_part(tmp_path):
    path = mailbox_path(tmp_path, Address("First.Last", "Auto.Test."))
    assert path == tmp_path / "mailboxes" / "auto.test" / "first.last"


def test_a_folder_is_a_maildir_plus_plus_subfolder_and_nothing_else(tmp_path):
    alice = Address("alice", "auto.test")
    assert mailbox_path(tmp_path, alice, ".Junk") == mailbox_path(tmp_path, alice) / ".Junk"
    for folder in ("Junk", "..", "./x", ".a/b", ".a.b", "." + "x" * 65, ".\nJunk"):
        with pytest.raises(ValueError):
            mailbox_path(tmp_path, alice, folder)


@pytest.mark.parametrize(
    "address",
    [
        Address("..", "auto.test"),
        Address("../../etc", "auto.test"),
        Address("a/b", "auto.test"),
        Address(".hidden", "auto.test"),
        Address("a..b", "auto.test"),
        Address("user%host", "auto.test"),
        Address("\u0130", "auto.test"),
        Address("", "auto.test"),
        Address("alice", "../etc"),
        Address("alice", "a/b.test"),
        Address("alice", ".."),
        Address("alice", "[127.0.0.1]"),
    ],
    ids=repr,
)
def test_mailbox_path_refuses_anything_that_could_leave_its_directory(tmp_path, address):
    with pytest.raises(ValueError):
        mailbox_path(tmp_path, address)


def test_bare_postmaster_goes_to_the_primary_domain() -> None:
    from mailwright.config import parse_config
    from mailwright.policy.routing import Router

    config = parse_config(
        'hostname = "mx.b.test"\n[domains]\nlocal = ["a.test", "b.test"]\n',
        source="t",
        base_dir=Path("."),
    )
    decision = Router(config).route_recipient(Address("postmaster", ""), may_relay=False)
    assert decision.reply.code == 250
    assert [str(t.address) for t in decision.targets] == ["postmaster@a.test"]


# ---------------------------------------------------------------- SRS addresses (issue 14)

SRS_SECRET = "routing-srs-secret-0123"
SRS_NOW = 1_764_800_000.0


def srs_router(domain: str = "srs.example.test") -> Router:
    text = CONFIG + f'[srs]\nsecret = "{SRS_SECRET}"\ndomain = "{domain}"\n'
    return Router(parse_config(text, source="test", base_dir=Path("/srv")), clock=lambda: SRS_NOW)


def srs_address(original: str, domain: str = "srs.example.test", days_ago: int = 0) -> Address:
    from mailwright.mailauth.srs import Srs

    srs = Srs(secret=SRS_SECRET.encode(), domain=domain)
    return srs.forward(a(original), SRS_NOW - days_ago * 86400)


def test_a_valid_srs_address_is_relayed_to_the_original_from_any_client() -> None:
    rcpt = srs_address("sender@remote.test")
    decision = route(srs_router(), rcpt, may_relay=False)
    assert reply_line(decision) == "250 2.1.5 Ok"
    [target] = decision.targets
    assert (target.address, target.original, target.local) == (a("sender@remote.test"), rcpt, False)
    assert target.forwarded


def test_an_srs_address_whose_original_is_local_reaches_that_mailbox() -> None:
    decision = route(srs_router("example.test"), srs_address("alice@example.test", "example.test"))
    assert destinations(decision) == [("alice@example.test", True)]


@pytest.mark.parametrize(
    "local, line",
    [
        ("SRS0=zzzz=AA=remote.test=x", "550 5.1.1 invalid SRS address"),
        ("SRS0=oops", "550 5.1.1 malformed SRS address"),
    ],
)
def test_a_bad_srs_address_is_refused_with_its_reason(local: str, line: str) -> None:
    decision = route(srs_router(), Address(local, "srs.example.test"), may_relay=True)
    assert (reply_line(decision), decision.targets) == (line, ())


def test_an_expired_srs_address_is_refused() -> None:
    decision = route(srs_router(), srs_address("s@remote.test", days_ago=21))
    assert reply_line(decision) == "550 5.1.1 SRS address expired"


def test_srs_looking_addresses_elsewhere_are_routed_as_usual() -> None:
    """Only the SRS domain reverses; without [srs] nothing does."""
    rcpt = srs_address("sender@remote.test", domain="example.test")
    assert reply_line(route(router_without_srs(), rcpt)) == str(NO_SUCH_USER_LINE)
    other = Address(rcpt.local_part, "elsewhere.test")
    assert reply_line(route(srs_router(), other)) == "550 5.7.1 Relaying denied"


def router_without_srs() -> Router:
    return Router(parse_config(CONFIG, source="test", base_dir=Path("/srv")))


NO_SUCH_USER_LINE = "550 5.1.1 Mailbox unavailable: no such user here"


def test_relayed_targets_are_not_forwarded_ones(router) -> None:
    [relayed] = route(router, "x@partner.test", may_relay=True).targets
    [forwarded] = route(router, "bob@example.test").targets
    assert (relayed.forwarded, forwarded.forwarded) == (False, True)
    assert not any(t.forwarded for t in route(router, "alice@example.test").targets)


def test_srs_addresses_at_a_local_srs_domain_are_decided_by_srs_alone() -> None:
    """Never delivered locally: the SRS check comes before mailboxes and auto_mailbox."""
    forged = Address("SRS0=zzzz=AA=remote.test=x", "auto.test")
    decision = route(srs_router("auto.test"), forged)
    assert (reply_line(decision), decision.targets) == ("550 5.1.1 invalid SRS address", ())
    assert reply_line(route(router_without_srs(), forged)) == NO_SUCH_USER_LINE
