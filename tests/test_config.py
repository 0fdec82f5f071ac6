"""Configuration loading: the embedded default, a full file, and every refusal."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from mailwright.config import (
    DEFAULT_AUTH_LOCKOUT,
    DEFAULT_AUTH_MAX_FAILURES,
    DEFAULT_DESTINATION_CONCURRENCY,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_RETRY,
    EMBEDDED_SOURCE,
    Config,
    MailboxConfig,
    SpaceReserve,
    describe,
    load_config,
    parse_config,
    split_host_port,
)
from mailwright.errors import ConfigError
from mailwright.model import Address

#: hash_password("secret", log2_n=10, salt=b"0123456789abcdef")
SECRET_HASH = (
    "$scrypt$ln=10,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg$S7FwBvpu+z8K0PUVUagFRTUAB2dAxIZpzVHvLZir+98"
)

FULL_EXAMPLE = """\
hostname = "mx.example.test"
data_dir = "mailwright-data"
[smtp]
listen = ["127.0.0.1:2525", "[::1]:2525"]
max_message_size = 10485760
max_recipients = 50
idle_timeout = 120
command_timeout = 60.5
data_timeout = 600
max_connections = 500
max_connections_per_ip = 20
max_errors = 5
max_line_length = 1000
greet_delay = 0
max_received_headers = 25
auth_failure_delay = 0.5
auth_max_failures = 7
auth_lockout = 600
[domains]
local = ["Example.TEST.", "other.test"]
auto_mailbox = ["other.test"]
[mailboxes]
"alice@example.test" = {}
"Dave@Example.test" = { password = "$scrypt$ln=10,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg$S7FwBvpu+z8K0PUVUagFRTUAB2dAxIZpzVHvLZir+98" }
[aliases]
"team@example.test" = ["alice@example.test", "dave@partner.test", "alice@example.test"]
[forward]
"bob@example.test" = "bob@elsewhere.test"
[relocated]
"carol@example.test" = "carol@newcorp.test"
[relay]
networks = ["10.0.0.0/8", "2001:db8::/32"]
[routes]
"elsewhere.test" = "127.0.0.1:2600"
"*" = "smarthost.test"
[delivery]
port = 2525
concurrency = 4
local_concurrency = 2
destination_concurrency = 3
connect_timeout = 10
attempt_timeout = 600
tls = "verify"
[dns]
servers = ["127.0.0.1:5353", "127.0.0.1", "[::1]:53"]
timeout = 2.5
[queue]
retry = [1, 2, 3]
max_age = 3600
min_free_space = "2.5%"
"""


def parse(text: str, base_dir: Path = Path("/srv/mail")) -> Config:
    return parse_config(text, source="test.toml", base_dir=base_dir)


def refusal(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text)
    message = str(info.value)
    assert "\n" not in message
    assert message == f"{info.value.key}: {info.value.problem}"
    return info.value


# ---------------------------------------------------------------- what loads


def test_embedded_default_is_loopback_localhost_without_relaying(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(None)
    assert config.source == EMBEDDED_SOURCE
    assert config.hostname == "localhost"
    assert config.smtp.listen == ("127.0.0.1:2525",)
    assert config.local_domains == {"localhost"}
    assert config.auto_mailbox_domains == {"localhost"}
    assert config.relay_networks == ()
    assert config.data_dir == tmp_path.resolve() / "mailwright-data"


def test_empty_file_gives_every_default(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text("")
    config = load_config(path)
    assert config.smtp.max_message_size == DEFAULT_MAX_MESSAGE_SIZE
    assert config.queue.retry == DEFAULT_RETRY
    assert config.delivery.tls == "opportunistic"
    assert config.delivery.destination_concurrency == DEFAULT_DESTINATION_CONCURRENCY == 20
    assert config.smtp.auth_max_failures == DEFAULT_AUTH_MAX_FAILURES == 5
    assert config.smtp.auth_lockout == DEFAULT_AUTH_LOCKOUT == 300.0
    assert config.queue.min_free_space == SpaceReserve(octets=104_857_600, percent=5.0)
    assert config.source == str(path)


def test_full_example_parses_every_key():
    config = parse(FULL_EXAMPLE)
    assert config.hostname == "mx.example.test"
    assert config.data_dir == Path("/srv/mail/mailwright-data").resolve()
    assert config.smtp.listen == ("127.0.0.1:2525", "[::1]:2525")
    assert config.smtp.listen_endpoints == (("127.0.0.1", 2525), ("::1", 2525))
    assert config.smtp.max_message_size == 10485760
    assert config.smtp.max_recipients == 50
    assert config.smtp.command_timeout == 60.5
    assert isinstance(config.smtp.idle_timeout, float)
    assert config.smtp.max_line_length == 1000
    assert config.smtp.greet_delay == 0.0
    assert config.smtp.max_received_headers == 25
    assert config.smtp.auth_failure_delay == 0.5
    assert config.smtp.auth_delay(1) == 0.5
    assert config.smtp.auth_delay(100) == 2.5
    assert (config.smtp.auth_max_failures, config.smtp.auth_lockout) == (7, 600.0)
    assert config.queue.min_free_space == SpaceReserve(octets=None, percent=2.5)
    assert config.tls is None
    assert config.submission.listen == () and config.submission.implicit_tls == ()
    assert config.local_domains == {"example.test", "other.test"}
    assert config.auto_mailbox_domains == {"other.test"}
    assert config.mailboxes == {
        "alice@example.test": MailboxConfig(),
        "dave@example.test": MailboxConfig(SECRET_HASH),
    }
    assert config.aliases == {
        "team@example.test": (Address("alice", "example.test"), Address("dave", "partner.test"))
    }
    assert config.forward == {"bob@example.test": Address("bob", "elsewhere.test")}
    assert config.relocated == {"carol@example.test": Address("carol", "newcorp.test")}
    assert config.relay_networks == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert config.routes == {"elsewhere.test": "127.0.0.1:2600", "*": "smarthost.test"}
    assert config.delivery.port == 2525
    assert config.dns.servers == ("127.0.0.1:5353", "127.0.0.1", "[::1]:53")
    assert config.dns.timeout == 2.5
    assert config.delivery.dns_servers == ()
    assert config.delivery.concurrency == 4
    assert config.delivery.local_concurrency == 2
    assert config.delivery.destination_concurrency == 3
    assert config.delivery.connect_timeout == 10.0
    assert config.delivery.attempt_timeout == 600.0
    assert config.delivery.tls == "verify"
    assert config.queue.retry == (1, 2, 3)
    assert config.queue.max_age == 3600
    assert config.source == "test.toml"


def test_relative_data_dir_is_relative_to_the_config_file_not_the_cwd(tmp_path, monkeypatch):
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "mw.toml").write_text('data_dir = "spool/../data"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("etc") / "mw.toml")
    assert config.data_dir == (folder / "data").resolve()
    assert config.data_dir.is_absolute()


def test_absolute_data_dir_is_kept(tmp_path):
    config = parse(f'data_dir = "{tmp_path}/store"\n')
    assert config.data_dir == tmp_path.resolve() / "store"


def test_load_config_accepts_a_str_path_and_a_utf8_bom(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b'\xef\xbb\xbfhostname = "mx.example.test"\n')
    assert load_config(str(path)).hostname == "mx.example.test"


def test_mailbox_keys_and_domains_are_normalised_to_lower_case():
    config = parse('[domains]\nlocal = ["EXAMPLE.test."]\n[mailboxes]\n"Alice@EXAMPLE.Test" = {}\n')
    assert config.local_domains == {"example.test"}
    assert set(config.mailboxes) == {"alice@example.test"}


def test_ipv6_listen_address_and_host_names():
    config = parse('[smtp]\nlisten = ["[::]:25", "0.0.0.0:25", "mx.example.test:587"]\n')
    assert config.smtp.listen_endpoints == (("::", 25), ("0.0.0.0", 25), ("mx.example.test", 587))


def test_listen_port_zero_asks_for_a_free_port_and_may_repeat():
    config = parse('[smtp]\nlisten = ["127.0.0.1:0", "127.0.0.1:0"]\n')
    assert config.smtp.listen_endpoints == (("127.0.0.1", 0), ("127.0.0.1", 0))


def test_split_host_port_uses_the_default_port_only_when_given():
    assert split_host_port("relay.test", default_port=25) == ("relay.test", 25)
    assert split_host_port("[2001:db8::1]", default_port=53) == ("2001:db8::1", 53)
    with pytest.raises(ValueError, match="missing port"):
        split_host_port("relay.test")


def test_describe_names_what_the_server_uses():
    text = describe(parse(FULL_EXAMPLE))
    assert "test.toml" in text
    assert "127.0.0.1:2525, [::1]:2525" in text
    assert "mx.example.test" in text
    assert str(Path("/srv/mail/mailwright-data").resolve()) in text
    assert "example.test, other.test" in text
    assert "2 mailboxes, 1 alias, 1 forward, 1 relocated address" in text
    assert "10.0.0.0/8, 2001:db8::/32" in text
    assert "elsewhere.test -> 127.0.0.1:2600" in text
    assert "new mail refused below 2.5% of the file system" in text
    assert "127.0.0.1:5353, 127.0.0.1, [::1]:53, 2.5 s per lookup" in text
    assert "deprecated" not in text


def test_deprecated_delivery_dns_servers_works_and_describe_names_its_replacement():
    config = parse('[delivery]\ndns_servers = ["127.0.0.1:5353"]\n')
    assert config.delivery.dns_servers == ("127.0.0.1:5353",)
    text = describe(config)
    assert "127.0.0.1:5353, 5 s per lookup" in text
    assert "deprecated      [delivery] dns_servers is deprecated: use [dns] servers" in text


def test_describe_of_the_embedded_default_says_only_authenticated_clients_relay():
    text = describe(load_config(None))
    assert "<embedded default>" in text
    assert "only for authenticated clients" in text
    assert os.fspath(Path.cwd().resolve() / "mailwright-data") in text
    assert "the system resolver, 5 s per lookup" in text


# ---------------------------------------------------------------- file problems


def test_missing_file_error_names_the_path(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == str(path)
    assert "No such file" in str(info.value)


def test_directory_instead_of_file_is_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_non_utf8_file_is_refused_with_the_offset(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('hostname = "caf\u00e9.test"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (
        str(info.value)
        == f"{path}: not valid UTF-8 (byte 0xe9 at offset 15); save the file as UTF-8"
    )


def test_toml_syntax_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('hostname = "mx.example.test"\n[smtp\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: TOML syntax error:")
    assert "line 2" in message
    assert "\n" not in message


# ---------------------------------------------------------------- refusals, key by key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hostnme = 'x'", "hostnme: unknown key; did you mean hostname?"),
        (
            "[smtp]\nmax_mesage_size = 1",
            "smtp.max_mesage_size: unknown key; did you mean max_message_size?",
        ),
        ("[smtpd]\n", "smtpd: unknown key; did you mean smtp?"),
        (
            "[delivery]\nzzz = 1",
            "delivery.zzz: unknown key; known keys: port, dns_servers, concurrency, local_concurrency, destination_concurrency, connect_timeout, attempt_timeout, tls, ca_file, mailboxes_dir",
        ),
        (
            '[mailboxes]\n"alice@localhost" = { pasword = "$scrypt$x" }',
            'mailboxes."alice@localhost".pasword: unknown key; did you mean password?',
        ),
        ("smtp = 5", "smtp: expected a table, got 5"),
    ],
)
def test_unknown_keys_are_refused_with_a_suggestion(text, message):
    assert str(refusal(text)) == message


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("max_message_size", '"big"', 'expected a positive integer, got "big"'),
        ("max_message_size", "true", "expected a positive integer, got true"),
        ("max_message_size", "0", "expected a positive integer, got 0"),
        ("max_message_size", "1.5", "expected a positive integer, got 1.5"),
        ("max_recipients", "-1", "expected a positive integer, got -1"),
        ("max_connections", "false", "expected a positive integer, got false"),
        ("max_connections_per_ip", "0", "expected a positive integer, got 0"),
        ("max_errors", "[]", "expected a positive integer, got an array"),
        ("max_received_headers", "{}", "expected a positive integer, got a table"),
        ("max_line_length", "100", "must be at least 512 (RFC 5321 4.5.3.1.4), got 100"),
        ("idle_timeout", "0", "expected a positive number of seconds, got 0"),
        ("command_timeout", "-5", "expected a positive number of seconds, got -5"),
        ("data_timeout", "true", "expected a positive number of seconds, got true"),
        ("data_timeout", "inf", "expected a positive number of seconds, got inf"),
        ("data_timeout", "nan", "expected a positive number of seconds, got nan"),
        ("greet_delay", "-1", "expected a number of seconds, 0 or more, got -1"),
        ("greet_delay", '"1s"', 'expected a number of seconds, 0 or more, got "1s"'),
        ("listen", '"127.0.0.1:25"', 'expected an array, got "127.0.0.1:25"'),
        ("listen", "[]", "expected at least one entry, got an empty array"),
        ("listen", "[25]", "expected an array of non-empty strings, got 25"),
    ],
)
def test_smtp_values_of_the_wrong_type_or_range_are_refused(key, value, problem):
    error = refusal(f"[smtp]\n{key} = {value}\n")
    assert error.key == f"smtp.{key}"
    assert error.problem == problem


@pytest.mark.parametrize(
    ("listen", "problem"),
    [
        ("127.0.0.1", '"127.0.0.1": missing port (write host:port, e.g. 127.0.0.1:2525)'),
        ("127.0.0.1:", '"127.0.0.1:": bad port "": expected a number from 0 to 65535'),
        (
            "127.0.0.1:65536",
            '"127.0.0.1:65536": bad port "65536": expected a number from 0 to 65535',
        ),
        ("127.0.0.1:smtp", '"127.0.0.1:smtp": bad port "smtp": expected a number from 0 to 65535'),
        (":25", '":25": missing host before the port'),
        ("::1:25", '"::1:25": an IPv6 address needs brackets, e.g. [::1]:2525'),
        ("[::1]", '"[::1]": missing port (write host:port, e.g. 127.0.0.1:2525)'),
        ("[::1", '"[::1": missing ] after the IPv6 address'),
        ("[::1]25", '"[::1]25": expected :port after the ]'),
        ("[1.2.3.4]:25", '"[1.2.3.4]:25": not an IPv6 address in brackets: "1.2.3.4"'),
        ("bad host:25", '"bad host:25": not a host name or IP address: "bad host"'),
    ],
)
def test_listen_addresses_need_a_host_and_a_good_port(listen, problem):
    error = refusal(f'[smtp]\nlisten = ["{listen}"]\n')
    assert error.key == "smtp.listen"
    assert error.problem == problem


def test_a_listen_address_given_twice_is_refused():
    error = refusal('[smtp]\nlisten = ["127.0.0.1:25", "127.0.0.1:25"]\n')
    assert str(error) == 'smtp.listen: "127.0.0.1:25" is listed twice'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('hostname = ""', 'hostname: expected a non-empty string, got ""'),
        (
            'hostname = "mx example"',
            'hostname: expected a domain name such as "example.test", got "mx example"',
        ),
        ("hostname = 5", "hostname: expected a non-empty string, got 5"),
        ("data_dir = 1", "data_dir: expected a non-empty string, got 1"),
        (
            '[domains]\nlocal = "example.test"',
            'domains.local: expected an array, got "example.test"',
        ),
        (
            '[domains]\nlocal = ["exa_mple.test"]',
            'domains.local: expected a domain name such as "example.test", got "exa_mple.test"',
        ),
        (
            '[domains]\nlocal = ["a..test"]',
            'domains.local: expected a domain name such as "example.test", got "a..test"',
        ),
        (
            '[domains]\nlocal = ["a.test"]\nauto_mailbox = ["b.test"]',
            'domains.auto_mailbox: "b.test" is not in domains.local; add it there',
        ),
    ],
)
def test_names_and_domains_are_checked(text, message):
    assert str(refusal(text)) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'hostname = "mx.example.test\\n"',
            'hostname: expected a domain name such as "example.test", got "mx.example.test\\n"',
        ),
        (
            '[domains]\nlocal = ["example.test\\n"]',
            'domains.local: expected a domain name such as "example.test", got "example.test\\n"',
        ),
        (
            '[smtp]\nlisten = ["mx.example.test\\n:25"]',
            'smtp.listen: "mx.example.test\\n:25": not a host name or IP address: "mx.example.test\\n"',
        ),
    ],
)
def test_a_name_ending_in_a_line_break_is_refused(text, message):
    """It used to pass check-config; then every greeting failed (a reply refuses CR and LF)."""
    assert str(refusal(text)) == message


@pytest.mark.parametrize(
    ("section", "entry", "message"),
    [
        (
            "mailboxes",
            '"alice" = {}',
            'mailboxes.alice: expected an address such as user@example.test, got "alice"',
        ),
        (
            "mailboxes",
            '"alice@" = {}',
            'mailboxes."alice@": expected an address such as user@example.test, got "alice@"',
        ),
        (
            "mailboxes",
            '"alice@other.test" = {}',
            'mailboxes."alice@other.test": "other.test" is not a local domain (see domains.local)',
        ),
        (
            "mailboxes",
            '"alice@example.test" = true',
            'mailboxes."alice@example.test": expected a table, got true',
        ),
        (
            "mailboxes",
            '".alice@example.test" = {}',
            'mailboxes.".alice@example.test": the local part of ".alice@example.test" is not a plain dot-atom (no quotes, spaces, @ or leading, trailing or double dots)',
        ),
        (
            "mailboxes",
            '"a%b@example.test" = {}',
            'mailboxes."a%b@example.test": a mailbox name must start with a letter or digit and use only letters, digits and . _ + - (it names a directory)',
        ),
        (
            "aliases",
            '"team@example.test" = "alice@example.test"',
            'aliases."team@example.test": expected an array, got "alice@example.test"',
        ),
        (
            "aliases",
            '"team@example.test" = []',
            'aliases."team@example.test": expected at least one entry, got an empty array',
        ),
        (
            "aliases",
            '"team@example.test" = ["alice"]',
            'aliases."team@example.test": expected an address such as user@example.test, got "alice"',
        ),
        (
            "aliases",
            '"team@other.test" = ["a@b.test"]',
            'aliases."team@other.test": "other.test" is not a local domain (see domains.local)',
        ),
        (
            "aliases",
            '"team" = ["a@b.test"]',
            'aliases.team: expected an address such as user@example.test, got "team"',
        ),
        (
            "forward",
            '"bob@example.test" = "bob"',
            'forward."bob@example.test": expected an address such as user@example.test, got "bob"',
        ),
        (
            "forward",
            '"bob@example.test" = ["bob@x.test"]',
            'forward."bob@example.test": expected a non-empty string, got an array',
        ),
        (
            "forward",
            '"bob@example.test" = "bob@bad_domain"',
            'forward."bob@example.test": the domain of "bob@bad_domain" is not a valid domain name',
        ),
        (
            "forward",
            '"bob" = "bob@x.test"',
            'forward.bob: expected an address such as user@example.test, got "bob"',
        ),
        (
            "forward",
            '"bob@other.test" = "bob@x.test"',
            'forward."bob@other.test": "other.test" is not a local domain (see domains.local)',
        ),
        (
            "relocated",
            '"carol@example.test" = "carol"',
            'relocated."carol@example.test": expected an address such as user@example.test, got "carol"',
        ),
        (
            "relocated",
            '"carol" = "carol@x.test"',
            'relocated.carol: expected an address such as user@example.test, got "carol"',
        ),
        (
            "relocated",
            '"carol@other.test" = "carol@x.test"',
            'relocated."carol@other.test": "other.test" is not a local domain (see domains.local)',
        ),
        (
            "relocated",
            '"postmaster@example.test" = "pm@x.test"',
            'relocated."postmaster@example.test": postmaster must always accept mail (RFC 5321 4.5.1)',
        ),
    ],
)
def test_address_tables_need_local_addresses_with_an_at_sign(section, entry, message):
    text = f'[domains]\nlocal = ["example.test"]\n[{section}]\n{entry}\n'
    assert str(refusal(text)) == message


def test_the_same_address_in_two_spellings_is_refused():
    error = refusal('[mailboxes]\n"alice@localhost" = {}\n"ALICE@localhost" = {}\n')
    assert str(error) == (
        'mailboxes."ALICE@localhost": same address as "alice@localhost" '
        "(addresses are compared without regard to case)"
    )


def test_an_address_may_not_be_both_mailbox_and_forward():
    error = refusal(
        '[mailboxes]\n"bob@localhost" = {}\n[forward]\n"bob@localhost" = "bob@elsewhere.test"\n'
    )
    assert str(error) == (
        'forward."bob@localhost": also in mailboxes; '
        "an address is one of mailbox, alias, forward or relocated"
    )


def test_an_alias_to_an_unknown_local_user_is_refused_as_a_likely_typo():
    text = (
        '[domains]\nlocal = ["example.test"]\n'
        '[mailboxes]\n"alice@example.test" = {}\n'
        '[aliases]\n"team@example.test" = ["alcie@example.test"]\n'
    )
    assert str(refusal(text)) == (
        'aliases."team@example.test": "alcie@example.test" is in a local domain '
        "but is no mailbox, alias or forward here"
    )


def test_a_forward_to_a_relocated_address_is_refused():
    text = (
        '[domains]\nlocal = ["example.test"]\n'
        '[forward]\n"bob@example.test" = "carol@example.test"\n'
        '[relocated]\n"carol@example.test" = "carol@newcorp.test"\n'
    )
    assert str(refusal(text)) == (
        'forward."bob@example.test": "carol@example.test" is relocated and receives no mail here'
    )


def test_utf8_mailbox_names_are_accepted():
    config = parse('[mailboxes]\n"Ünï@localhost" = {}\n')
    assert set(config.mailboxes) == {"ünï@localhost"}


def test_local_targets_may_be_postmaster_or_auto_mailbox_users():
    config = parse(
        '[domains]\nlocal = ["example.test", "auto.test"]\nauto_mailbox = ["auto.test"]\n'
        '[aliases]\n"abuse@example.test" = ["PostMaster@example.test", "anyone@auto.test"]\n'
    )
    assert config.aliases["abuse@example.test"] == (
        Address("PostMaster", "example.test"),
        Address("anyone", "auto.test"),
    )


@pytest.mark.parametrize("password", ["hunter2", "$1$md5crypt", ""])
def test_plain_text_passwords_are_refused_without_echoing_them(password):
    error = refusal(f'[mailboxes]\n"alice@localhost" = {{ password = "{password}" }}\n')
    assert error.key == 'mailboxes."alice@localhost".password'
    assert error.problem.startswith("expected a password hash starting with $scrypt$")
    assert "plain-text passwords are refused" in error.problem
    assert "mailwright passwd" in error.problem
    if password:
        assert password not in str(error)


def test_a_made_hash_is_accepted():
    config = parse(f'[mailboxes]\n"alice@localhost" = {{ password = "{SECRET_HASH}" }}\n')
    assert config.mailboxes["alice@localhost"].password_hash == SECRET_HASH


def test_argon2_hashes_are_refused_as_unsupported():
    error = refusal('[mailboxes]\n"alice@localhost" = { password = "$argon2id$v=19$x" }\n')
    assert error.problem.startswith("argon2 hashes are not supported")


@pytest.mark.parametrize(
    ("hash_text", "problem"),
    [
        ("$scrypt$hunter2", "expected $scrypt$ln=..,r=..,p=..$<salt>$<hash>"),
        ("$scrypt$ln=15,r=8$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43, "the parameters must read"),
        ("$scrypt$ln=30,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43, "ln must be from 10 to 20"),
        ("$scrypt$ln=20,r=32,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + "A" * 43, "MiB"),
        ("$scrypt$ln=15,r=8,p=1$c2FsdA$" + "A" * 43, "the salt is shorter than 8 bytes"),
        ("$scrypt$ln=15,r=8,p=1$MDEyMzQ1Njc4OWFiY2RlZg$aGFzaA", "the hash is shorter"),
        ("$scrypt$ln=15,r=8,p=1$!!$" + "A" * 43, "the salt is not base64"),
    ],
)
def test_malformed_scrypt_hashes_are_refused(hash_text, problem):
    error = refusal(f'[mailboxes]\n"alice@localhost" = {{ password = "{hash_text}" }}\n')
    assert error.problem.startswith("malformed $scrypt$ hash: ")
    assert problem in error.problem
    assert hash_text not in str(error)


def test_send_as_lists_addresses_and_domains():
    config = parse(
        '[domains]\nlocal = ["example.test"]\n[mailboxes]\n'
        '"alice@example.test" = { send_as = ["Sales@Example.test", "@Example.ORG", "@example.org"] }\n'
    )
    assert config.mailboxes["alice@example.test"].send_as == ("sales@example.test", "@example.org")


@pytest.mark.parametrize(
    ("send_as", "message"),
    [
        ('["@"]', 'expected "@domain" or an address, got "@"'),
        ('["nobody"]', "expected an address such as user@example.test"),
        ('"@example.org"', "expected an array"),
    ],
)
def test_bad_send_as_entries_are_refused(send_as, message):
    error = refusal(f'[mailboxes]\n"alice@localhost" = {{ send_as = {send_as} }}\n')
    assert error.key == 'mailboxes."alice@localhost".send_as'
    assert message in error.problem


# ---------------------------------------------------------------- TLS and submission


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory):
    import trustme

    folder = tmp_path_factory.mktemp("pem")
    ca = trustme.CA()
    cert = ca.issue_cert("mx.example.test")
    cert.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    cert.private_key_pem.write_to_path(folder / "key.pem")
    ca.issue_cert("other.test").private_key_pem.write_to_path(folder / "other-key.pem")
    return folder


def test_tls_paths_are_relative_to_the_config_file(pem_files):
    config = parse(
        '[tls]\ncertificate = "cert.pem"\nkey = "key.pem"\n'
        '[submission]\nlisten = ["127.0.0.1:587"]\nimplicit_tls = ["127.0.0.1:465"]\n',
        base_dir=pem_files,
    )
    assert config.tls is not None
    assert config.tls.certificate == pem_files / "cert.pem"
    assert config.tls.key == pem_files / "key.pem"
    assert config.tls.handshake_timeout == 10.0
    assert config.submission.listen_endpoints == (("127.0.0.1", 587),)
    assert config.submission.implicit_tls_endpoints == (("127.0.0.1", 465),)
    text = describe(config)
    assert "127.0.0.1:587 (STARTTLS, then AUTH required)" in text
    assert "127.0.0.1:465 (implicit TLS, then AUTH required)" in text
    assert f"certificate {pem_files / 'cert.pem'}; STARTTLS offered" in text


def test_describe_says_when_tls_is_off():
    assert "off (no [tls] certificate: no STARTTLS, no AUTH)" in describe(parse(""))


@pytest.mark.parametrize(
    ("tls", "key", "problem"),
    [
        ('certificate = "cert.pem"', "tls.key", "missing; [tls] needs both certificate and key"),
        ('certificate = "nope.pem"\nkey = "key.pem"', "tls.certificate", "cannot read"),
        ('certificate = "cert.pem"\nkey = "nope.pem"', "tls.key", "cannot read"),
        ('certificate = "key.pem"\nkey = "key.pem"', "tls.certificate", "no PEM certificate in"),
        ('certificate = "cert.pem"\nkey = "other-key.pem"', "tls.key", "is not the private key of"),
        ('certificate = "cert.pem"\nkey = "key.pem"\nkeyfile = "x"', "tls.keyfile", "unknown key"),
    ],
)
def test_tls_files_must_be_readable_and_match(pem_files, tls, key, problem):
    with pytest.raises(ConfigError) as info:
        parse(f"[tls]\n{tls}\n", base_dir=pem_files)
    assert info.value.key == key
    assert problem in info.value.problem


def test_submission_needs_tls():
    error = refusal('[submission]\nimplicit_tls = ["127.0.0.1:465"]\n')
    assert error.key == "submission.implicit_tls"
    assert "submission needs TLS" in error.problem


def test_a_port_cannot_be_both_smtp_and_submission(pem_files):
    with pytest.raises(ConfigError) as info:
        parse(
            '[smtp]\nlisten = ["127.0.0.1:2525"]\n'
            '[tls]\ncertificate = "cert.pem"\nkey = "key.pem"\n'
            '[submission]\nlisten = ["127.0.0.1:2525"]\n',
            base_dir=pem_files,
        )
    assert str(info.value) == 'submission.listen: "127.0.0.1:2525" is also in smtp.listen'


def test_auth_failure_delay_may_be_zero_but_not_negative():
    assert parse("[smtp]\nauth_failure_delay = 0\n").smtp.auth_delay(3) == 0.0
    assert str(refusal("[smtp]\nauth_failure_delay = -1\n")) == (
        "smtp.auth_failure_delay: expected a number of seconds, 0 or more, got -1"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("auth_max_failures = 0", "smtp.auth_max_failures: expected a positive integer, got 0"),
        ("auth_max_failures = 2.5", "smtp.auth_max_failures: expected a positive integer, got 2.5"),
        ("auth_lockout = 0", "smtp.auth_lockout: expected a positive number of seconds, got 0"),
        (
            'auth_lockout = "5m"',
            'smtp.auth_lockout: expected a positive number of seconds, got "5m"',
        ),
    ],
)
def test_auth_lockout_keys_refuse_bad_values(text, message):
    assert str(refusal(f"[smtp]\n{text}\n")) == message


def test_describe_names_the_auth_lockout(pem_files):
    config = parse(
        "[smtp]\nauth_max_failures = 3\nauth_lockout = 90\n"
        '[tls]\ncertificate = "cert.pem"\nkey = "key.pem"\n',
        base_dir=pem_files,
    )
    assert "(3 failures lock a client out for 90 s)" in describe(config)


@pytest.mark.parametrize(
    ("value", "reserve"),
    [
        ("104857600", SpaceReserve(octets=104_857_600, percent=None)),
        ("0", SpaceReserve(octets=0, percent=None)),
        ('"5%"', SpaceReserve(octets=None, percent=5.0)),
        ('" 2.5 % "', SpaceReserve(octets=None, percent=2.5)),
        ('"0%"', SpaceReserve(octets=None, percent=0.0)),
    ],
)
def test_min_free_space_in_octets_or_percent(value, reserve):
    assert parse(f"[queue]\nmin_free_space = {value}\n").queue.min_free_space == reserve


@pytest.mark.parametrize("value", ["-1", '"100%"', '"5 percent"', '"5"', "1.5", "true", '""'])
def test_min_free_space_refuses_other_values(value):
    error = refusal(f"[queue]\nmin_free_space = {value}\n")
    assert error.key == "queue.min_free_space"
    assert error.problem.startswith(
        'expected a number of octets (104857600) or a percentage of the file system below 100 ("5%")'
    )


def test_the_default_reserve_is_the_smaller_of_100_mb_and_5_percent():
    reserve = parse("").queue.min_free_space
    assert reserve.required(1 << 40) == 104_857_600  # 1 TiB: 5 % would be 51 GiB
    assert reserve.required(1 << 30) == (1 << 30) * 5 // 100  # 1 GiB: 51 MiB
    assert SpaceReserve(octets=1000, percent=None).required(1 << 40) == 1000
    assert SpaceReserve(octets=None, percent=50).required(8 << 20) == 4 << 20
    assert "104857600 octets or 5% of the file system, whichever is smaller" in describe(parse(""))
    assert "no reserve (min_free_space = 0)" in describe(parse("[queue]\nmin_free_space = 0\n"))


@pytest.mark.parametrize(
    ("networks", "message"),
    [
        (
            '["10.0.0.0/33"]',
            'relay.networks: "10.0.0.0/33" is not a network in CIDR notation (e.g. "192.0.2.0/24")',
        ),
        (
            '["example.test"]',
            'relay.networks: "example.test" is not a network in CIDR notation (e.g. "192.0.2.0/24")',
        ),
        (
            '["10.0.0.1/8"]',
            'relay.networks: "10.0.0.1/8" has host bits set; did you mean "10.0.0.0/8"?',
        ),
        ('"10.0.0.0/8"', 'relay.networks: expected an array, got "10.0.0.0/8"'),
        ("[8]", "relay.networks: expected a non-empty string, got 8"),
    ],
)
def test_bad_relay_networks_are_refused(networks, message):
    assert str(refusal(f"[relay]\nnetworks = {networks}\n")) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[delivery]\ntls = "maybe"',
            'delivery.tls: expected one of "opportunistic", "required", "verify", got "maybe"',
        ),
        (
            "[delivery]\ntls = true",
            'delivery.tls: expected one of "opportunistic", "required", "verify", got true',
        ),
        ("[delivery]\nport = 0", "delivery.port: expected a port number from 1 to 65535, got 0"),
        (
            "[delivery]\nport = 70000",
            "delivery.port: expected a port number from 1 to 65535, got 70000",
        ),
        (
            "[delivery]\nport = true",
            "delivery.port: expected a port number from 1 to 65535, got true",
        ),
        ("[delivery]\nconcurrency = 0", "delivery.concurrency: expected a positive integer, got 0"),
        (
            "[delivery]\ndestination_concurrency = 0",
            "delivery.destination_concurrency: expected a positive integer, got 0",
        ),
        (
            "[delivery]\nconnect_timeout = 0",
            "delivery.connect_timeout: expected a positive number of seconds, got 0",
        ),
        (
            "[delivery]\nattempt_timeout = 900",
            "delivery.attempt_timeout: at most 840 seconds (the queue hands a claimed message"
            " out again after 900 s), got 900",
        ),
        (
            '[dns]\nservers = ["dns.example.test"]',
            'dns.servers: "dns.example.test": a DNS server must be an IP address',
        ),
        (
            '[dns]\nservers = ["127.0.0.1:99999"]',
            'dns.servers: "127.0.0.1:99999": bad port "99999": expected a number from 1 to 65535',
        ),
        (
            '[dns]\nservers = ["::1"]',
            'dns.servers: "::1": an IPv6 address needs brackets, e.g. [::1]:2525',
        ),
        ("[dns]\ntimeout = 0", "dns.timeout: expected a positive number of seconds, got 0"),
        (
            '[delivery]\ndns_servers = ["dns.example.test"]',
            'delivery.dns_servers: "dns.example.test": a DNS server must be an IP address',
        ),
        (
            '[delivery]\ndns_servers = ["127.0.0.1"]\n[dns]\nservers = ["127.0.0.1"]',
            "delivery.dns_servers: is the deprecated name of dns.servers, and both are set: "
            "keep only [dns] servers",
        ),
        ("[queue]\nretry = []", "queue.retry: expected at least one entry, got an empty array"),
        ("[queue]\nretry = [60, 0]", "queue.retry: expected a positive integer, got 0"),
        ("[queue]\nretry = [60, true]", "queue.retry: expected a positive integer, got true"),
        ("[queue]\nmax_age = -1", "queue.max_age: expected a positive integer, got -1"),
        (
            "[queue]\ndelay_warning = -1",
            "queue.delay_warning: expected a number of seconds, 0 or more, got -1",
        ),
        (
            '[routes]\n"elsewhere.test" = "127.0.0.1:0"',
            'routes."elsewhere.test": "127.0.0.1:0": bad port "0": expected a number from 1 to 65535',
        ),
        (
            '[routes]\n"elsewhere.test" = 25',
            'routes."elsewhere.test": expected a non-empty string, got 25',
        ),
        (
            '[routes]\n"bad domain" = "relay.test"',
            'routes."bad domain": expected a domain name such as "example.test", got "bad domain"',
        ),
        (
            '[routes]\n"a.test" = "relay.test"\n"A.test." = "relay.test"',
            'routes."A.test.": the route for "a.test" is given twice',
        ),
    ],
)
def test_delivery_queue_and_route_values_are_checked(text, message):
    assert str(refusal(text)) == message


def test_long_values_are_shortened_in_messages():
    error = refusal(f'[smtp]\nmax_errors = "{"x" * 500}"\n')
    assert len(str(error)) < 120


def test_max_body_line_length_is_zero_or_at_least_1000(tmp_path: Path) -> None:
    from mailwright.config import parse_config as parse

    assert (
        parse(
            "[smtp]\nmax_body_line_length = 1000\n", source="t", base_dir=tmp_path
        ).smtp.max_body_line_length
        == 1000
    )
    assert parse("", source="t", base_dir=tmp_path).smtp.max_body_line_length == 0
    with pytest.raises(ConfigError, match=r"smtp\.max_body_line_length"):
        parse("[smtp]\nmax_body_line_length = 80\n", source="t", base_dir=tmp_path)


def test_delay_warning_is_four_hours_unless_set_and_zero_turns_it_off(tmp_path: Path) -> None:
    from mailwright.config import parse_config as parse

    assert parse("", source="t", base_dir=tmp_path).queue.delay_warning == 14400
    assert parse("[queue]\ndelay_warning = 0\n", source="t", base_dir=tmp_path).queue.delay_warning == 0
    assert parse("[queue]\ndelay_warning = 1.5\n", source="t", base_dir=tmp_path).queue.delay_warning == 1.5


def test_processes_is_a_count_or_auto(tmp_path: Path) -> None:
    from mailwright.config import parse_config as parse

    def processes(value: str) -> int:
        return parse(f"[smtp]\nprocesses = {value}\n", source="t", base_dir=tmp_path).smtp.processes

    assert parse("", source="t", base_dir=tmp_path).smtp.processes == 1
    assert processes("3") == 3
    assert processes('"auto"') == len(os.sched_getaffinity(0))
    for bad in ("0", "65", '"many"', "true", "1.5"):
        with pytest.raises(ConfigError, match=r'smtp\.processes: expected "auto" or a number'):
            processes(bad)


# ---------------------------------------------------------------- [[dkim.keys]]


def _dkim_key(tmp_path: Path, name: str = "example.test.s1.key", algorithm: str = "rsa") -> Path:
    from mailwright.mailauth.dkim import generate_private_key, write_private_key

    path = tmp_path / name
    write_private_key(path, generate_private_key(algorithm, 1024))  # type: ignore[arg-type]
    return path


def _dkim_table(key: str, domain: str = "example.test", selector: str = "s1") -> str:
    return f'[[dkim.keys]]\ndomain = "{domain}"\nselector = "{selector}"\nkey = "{key}"\n'


def _dkim_refusal(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, base_dir=tmp_path)
    assert "\n" not in str(info.value)
    return info.value


def test_dkim_keys_load_relative_to_the_config_folder(tmp_path):
    _dkim_key(tmp_path)
    _dkim_key(tmp_path, "ed.key", "ed25519")
    config = parse(
        _dkim_table("example.test.s1.key") + _dkim_table("ed.key", "Other.Test", "e1"),
        base_dir=tmp_path,
    )
    first, second = config.dkim.keys
    assert (first.domain, first.selector, first.key) == (
        "example.test",
        "s1",
        tmp_path / "example.test.s1.key",
    )
    assert second.domain == "other.test" and second.key == tmp_path / "ed.key"
    assert parse("").dkim.keys == ()
    assert "DKIM signing    example.test (s=s1), other.test (s=e1)" in describe(config)
    assert "DKIM" not in describe(parse(""))


def test_dkim_key_readable_by_others_is_refused_naming_the_key(tmp_path):
    _dkim_key(tmp_path).chmod(0o640)
    error = _dkim_refusal(tmp_path, _dkim_table("example.test.s1.key"))
    assert error.key == "dkim.keys[0].key"
    assert "example.test.s1.key" in error.problem and "0640" in error.problem


def test_dkim_key_missing_or_a_folder_is_refused(tmp_path):
    error = _dkim_refusal(tmp_path, _dkim_table("gone.key"))
    assert error.key == "dkim.keys[0].key" and "cannot read" in error.problem
    assert "gone.key" in error.problem
    (tmp_path / "folder.key").mkdir(mode=0o700)
    error = _dkim_refusal(tmp_path, _dkim_table("folder.key"))
    assert error.key == "dkim.keys[0].key" and "folder.key" in error.problem


@pytest.mark.parametrize(
    "content",
    [
        b"not a key at all\n",
        b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    ],
)
def test_dkim_key_file_without_a_private_key_is_refused(tmp_path, content):
    path = tmp_path / "junk.key"
    path.write_bytes(content)
    path.chmod(0o600)
    error = _dkim_refusal(tmp_path, _dkim_table("junk.key"))
    assert error.key == "dkim.keys[0].key" and "junk.key" in error.problem


def test_dkim_key_entry_needs_every_field_and_one_key_per_domain(tmp_path):
    _dkim_key(tmp_path)
    error = _dkim_refusal(tmp_path, '[[dkim.keys]]\ndomain = "example.test"\nkey = "x"\n')
    assert error.key == "dkim.keys[0].selector" and "missing" in error.problem
    error = _dkim_refusal(tmp_path, _dkim_table("example.test.s1.key", selector="bad selector"))
    assert error.key == "dkim.keys[0].selector"
    twice = _dkim_table("example.test.s1.key") + _dkim_table("example.test.s1.key", selector="s2")
    error = _dkim_refusal(tmp_path, twice)
    assert error.key == "dkim.keys[1].domain" and "dkim.keys[0]" in error.problem


def test_verify_modes_off_by_default_record_accepted_others_refused() -> None:
    assert (parse("").verify.spf, parse("").verify.dkim) == ("off", "off")
    config = parse('[verify]\nspf = "record"\ndkim = "record"\n')
    assert (config.verify.spf, config.verify.dkim) == ("record", "record")
    assert parse('[verify]\nspf = "enforce"\n').verify.spf_enforced
    # "enforce" exists for SPF and DMARC only: elsewhere refused, never treated as "record".
    assert 'expected one of "off", "record"' in str(refusal('[verify]\ndkim = "enforce"\n'))
    assert "verify.spf" in str(refusal('[verify]\nspf = "on"\n'))
    assert "verify.dkim" in str(refusal('[verify]\ndkim = "on"\n'))
    assert parse('[verify]\ndmarc = "record"\n').verify.dmarc == "record"
    assert parse('[verify]\ndmarc = "enforce"\n').verify.dmarc_enforced
    assert "verify.dmarc" in str(refusal('[verify]\ndmarc = "reject"\n'))
    assert parse('[verify]\narc = "record"\n').verify.arc == "record"
    assert parse('[verify]\narc = "record"\n').verify.any
    assert "verify.arc" in str(refusal('[verify]\narc = "enforce"\n'))


_SRS = '[srs]\nsecret = "a-secret-of-some-length"\ndomain = "fwd.example.test"\n'


def test_arc_seal_off_by_default_and_only_true_or_false(tmp_path):
    assert parse("").arc.seal is False
    assert "arc.seal" in str(refusal('[arc]\nseal = "yes"\n'))
    assert "expected true or false" in str(refusal("[arc]\nseal = 1\n"))
    assert "ARC" not in describe(parse(""))


def test_arc_seal_needs_srs_and_an_rsa_key_for_the_srs_domain(tmp_path):
    """Each missing piece is named in one line, at start-up and by check-config."""
    seal = "[arc]\nseal = true\n"
    _dkim_key(tmp_path, "fwd.key")
    fwd_key = _dkim_table("fwd.key", "fwd.example.test", "fwd")
    error = _dkim_refusal(tmp_path, seal + fwd_key)
    assert error.key == "arc.seal" and "needs SRS" in error.problem
    _dkim_key(tmp_path)  # a key for a parent of the SRS domain does not count
    error = _dkim_refusal(tmp_path, seal + _SRS + _dkim_table("example.test.s1.key"))
    assert error.key == "arc.seal" and '"fwd.example.test"' in error.problem
    _dkim_key(tmp_path, "ed.key", "ed25519")
    error = _dkim_refusal(tmp_path, seal + _SRS + _dkim_table("ed.key", "fwd.example.test"))
    assert error.key == "arc.seal" and "Ed25519" in error.problem and "RSA" in error.problem
    config = parse(seal + _SRS + fwd_key, base_dir=tmp_path)
    assert config.arc.seal
    assert "ARC sealing     forwarded mail sealed by fwd.example.test" in describe(config)
