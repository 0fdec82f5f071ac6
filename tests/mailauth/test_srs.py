"""The SRS scheme (mailauth/srs.py), checked both ways against srslib and on its own."""

from __future__ import annotations

from pathlib import Path

import pytest
import srslib

from mailwright.config import describe, parse_config
from mailwright.errors import ConfigError
from mailwright.mailauth import srs as srs_module
from mailwright.mailauth.srs import EXPIRED, INVALID, MALFORMED, Srs, SrsError
from mailwright.model import Address

SECRET = "a-secret-of-some-length"
OLD_SECRET = "the-secret-of-last-year"
DOMAIN = "srs.example.test"
NOW = 1_764_800_000.0  # 2025-12-03, a fixed day
DAY = 86400.0


def ours(**kw: object) -> Srs:
    return Srs(secret=SECRET.encode(), domain=DOMAIN, **kw)  # type: ignore[arg-type]


def theirs(now: float = NOW, secret: str = SECRET, prev: tuple[str, ...] = ()) -> srslib.SRS:
    lib = srslib.SRS(secret, prev_secrets=list(prev), validity_days=21)
    lib._time_fn = lambda: now  # srslib's only clock hook: the reason we write our own
    return lib


def test_forward_writes_the_guarded_srs0_form_srslib_writes() -> None:
    sender = Address("Alice.Smith", "Sender.Example")
    rewritten = ours().forward(sender, NOW)
    assert str(rewritten) == theirs().forward(str(sender), DOMAIN)
    local = rewritten.local_part
    assert local.startswith("SRS0=") and rewritten.domain == DOMAIN
    _tag, digest, stamp, host, orig = local.split("=", 4)
    assert (len(digest), len(stamp), host, orig) == (4, 2, "Sender.Example", "Alice.Smith")


def test_srslib_reverses_ours_and_ours_reverses_srslibs() -> None:
    sender = Address("bob+tag", "gmail.example")
    assert theirs().reverse(str(ours().forward(sender, NOW))) == "bob+tag@gmail.example"
    made_by_srslib = Address.from_text(theirs().forward("carol@corp.example", DOMAIN))
    assert ours().reverse(made_by_srslib, NOW) == Address("carol", "corp.example")


def test_an_srs0_sender_from_another_hop_becomes_srs1_both_ways() -> None:
    first_hop = theirs(secret="first-hop-secret-xyz").forward("dan@origin.example", "hop1.example")
    ours_srs1 = ours().forward(Address.from_text(first_hop), NOW)
    assert ours_srs1.local_part.startswith("SRS1=")
    assert str(ours_srs1) == theirs().forward(first_hop, DOMAIN)
    # A bounce to our SRS1 address goes back to the first hop's SRS0 address.
    assert theirs().reverse(str(ours_srs1)) == first_hop
    assert str(ours().reverse(ours_srs1, NOW)) == first_hop
    # An SRS1 sender keeps its first hop and gets our hash.
    again = ours().forward(Address(ours_srs1.local_part, "hop2.example"), NOW)
    assert str(again) == theirs().forward(f"{ours_srs1.local_part}@hop2.example", DOMAIN)
    assert str(ours().reverse(again, NOW)) == first_hop


def test_hash_is_compared_without_regard_to_case() -> None:
    rewritten = ours().forward(Address("eve", "case.example"), NOW)
    for variant in (rewritten.local_part.lower(), rewritten.local_part.upper()):
        assert ours().reverse(Address(variant, DOMAIN), NOW).key == "eve@case.example"


def test_previous_secrets_still_reverse_after_rotation() -> None:
    old = Srs(secret=OLD_SECRET.encode(), domain=DOMAIN).forward(Address("f", "x.example"), NOW)
    with pytest.raises(SrsError) as refused:
        ours().reverse(old, NOW)
    assert refused.value.reason == INVALID
    rotated = ours(previous_secrets=(OLD_SECRET.encode(),))
    assert rotated.reverse(old, NOW) == Address("f", "x.example")


@pytest.mark.parametrize("days, fine", [(0, True), (20, True), (21, False), (500, False)])
def test_addresses_last_max_age_days(days: int, fine: bool) -> None:
    rewritten = ours().forward(Address("g", "y.example"), NOW)
    later = NOW + days * DAY
    if fine:
        assert ours().reverse(rewritten, later) == Address("g", "y.example")
        assert theirs(later).reverse(str(rewritten)) == "g@y.example"
    else:
        with pytest.raises(SrsError) as refused:
            ours().reverse(rewritten, later)
        assert refused.value.reason == EXPIRED
        with pytest.raises(srslib.InvalidTimestampError):
            theirs(later).reverse(str(rewritten))


def test_a_stamp_from_the_future_is_expired_not_accepted() -> None:
    rewritten = ours().forward(Address("h", "z.example"), NOW + 5 * DAY)
    with pytest.raises(SrsError) as refused:
        ours().reverse(rewritten, NOW)
    assert refused.value.reason == EXPIRED


@pytest.mark.parametrize(
    "local, reason",
    [
        ("SRS0=AAAA=AA=forged.example=mallory", INVALID),  # a guessed hash
        ("SRS0=A=AA=forged.example=mallory", INVALID),  # a hash too short to mean anything
        ("SRS0=AAAA=A1=forged.example=mallory", MALFORMED),  # 1 is not in the alphabet
        ("SRS0=AAAA=AAA=forged.example=mallory", MALFORMED),
        ("SRS0=AAAA=AA=forged.example", MALFORMED),  # no local part
        ("SRS0=", MALFORMED),
        ("SRS1=AAAA=hop.example==BBBB=AA=x=y", INVALID),
        ("SRS1=AAAA=hop.example", MALFORMED),
        ("srs2=AAAA=AA=a=b", MALFORMED),
        ("SRS0=AAAA=Aß=forged.example=mallory", MALFORMED),  # upper-cases to three letters
        ("SRS0=ÄÄÄÄ=AA=forged.example=mallory", INVALID),  # SMTPUTF8 junk in the hash
    ],
)
def test_forged_and_malformed_addresses_say_why(local: str, reason: str) -> None:
    with pytest.raises(SrsError) as refused:
        ours().reverse(Address(local, DOMAIN), NOW)
    assert refused.value.reason == reason


def test_a_tampered_original_fails_the_hash() -> None:
    rewritten = ours().forward(Address("ivy", "real.example"), NOW)
    tampered = rewritten.local_part.replace("real.example", "other.example")
    with pytest.raises(SrsError) as refused:
        ours().reverse(Address(tampered, DOMAIN), NOW)
    assert refused.value.reason == INVALID


def test_long_local_parts_are_rewritten_whole_as_postsrsd_does() -> None:
    sender = Address("x" * 60, "a-rather-long-sending-domain.example")
    rewritten = ours().forward(sender, NOW)
    assert len(rewritten.local_part.encode()) > 64
    assert ours().reverse(rewritten, NOW) == sender
    assert theirs().reverse(str(rewritten)) == str(sender)


def test_a_sender_at_our_srs_domain_is_left_alone() -> None:
    mine = Address("SRS0=abcd=AA=x.example=y", DOMAIN.upper())
    assert ours().forward(mine, NOW) is mine


# ---------------------------------------------------------------- [srs] configuration


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    return parse_config(text, source="test", base_dir=tmp_path)


def test_srs_is_off_without_a_secret(tmp_path: Path) -> None:
    assert srs_module.from_config(load(tmp_path, "")) is None


def test_srs_config_defaults_to_the_hostname_and_21_days(tmp_path: Path) -> None:
    config = load(tmp_path, f'hostname = "MX.Example.Test"\n[srs]\nsecret = "{SECRET}"\n')
    srs = srs_module.from_config(config)
    assert srs == Srs(secret=SECRET.encode(), domain="mx.example.test", max_age_days=21)


def test_secret_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "srs.key").write_text(SECRET + "\n")
    config = load(
        tmp_path,
        f'[srs]\nsecret_file = "srs.key"\ndomain = "{DOMAIN}"\n'
        f'previous_secrets = ["{OLD_SECRET}"]\nmax_age_days = 7\n',
    )
    assert srs_module.from_config(config) == Srs(
        secret=SECRET.encode(),
        domain=DOMAIN,
        previous_secrets=(OLD_SECRET.encode(),),
        max_age_days=7,
    )
    assert SECRET not in repr(config)
    summary = describe(config)
    assert f"SRS             forwarded mail sent as SRS0=...@{DOMAIN}" in summary
    assert SECRET not in summary
    assert "SRS" not in describe(load(tmp_path, ""))


@pytest.mark.parametrize(
    "table, key, problem",
    [
        ('secret = "short"', "srs.secret", "at least 16 characters, got 5"),
        ('secret = "' + SECRET + '"\nsecret_file = "k"', "srs.secret_file", "not both"),
        ('secret_file = "missing.key"', "srs.secret_file", "cannot read"),
        ('previous_secrets = ["short"]', "srs.previous_secrets", "at least 16"),
        ("max_age_days = 0", "srs.max_age_days", "positive integer"),
        ('secrets = "' + SECRET + '"', "srs", "secret"),  # unknown key, did you mean
    ],
)
def test_bad_srs_settings_are_refused_in_one_line(
    tmp_path: Path, table: str, key: str, problem: str
) -> None:
    (tmp_path / "k").write_text(SECRET)
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, "[srs]\n" + table + "\n")
    message = str(refused.value)
    assert key in message and problem in message and "\n" not in message
    assert SECRET not in message
