"""Converters for the mail authentication tables: ``[verify]``, ``[srs]``, ``[dkim]``.

Kept apart from values.py (the general converters they build on) so that each
file stays readable; the shape is the same, ``convert(value, at) -> result``.
"""

from __future__ import annotations

from mailwright.config.place import Place, show
from mailwright.config.values import array, readable_file, string
from mailwright.syntax import is_domain_name

#: ``[verify] spf`` and ``dkim``: not checked, or checked and recorded in an
#: Authentication-Results header (docs/authentication.md).
VERIFY_MODES = ("off", "record")


#: ``[verify] spf`` may also refuse: "enforce" answers an SPF fail with 550 5.7.23.
SPF_MODES = (*VERIFY_MODES, "enforce")


#: ``[verify] dmarc`` likewise: "enforce" refuses what the From domain's p=reject says to
#: refuse (550 5.7.26) and files what p=quarantine says to quarantine in .Junk.
DMARC_MODES = SPF_MODES


def spf_mode(value: object, at: Place) -> str:
    return _one_of(SPF_MODES, value, at)


def dmarc_mode(value: object, at: Place) -> str:
    return _one_of(DMARC_MODES, value, at)


def _one_of(modes: tuple[str, ...], value: object, at: Place) -> str:
    if not isinstance(value, str) or value not in modes:
        choices = ", ".join(f'"{mode}"' for mode in modes)
        raise at.fail(f"expected one of {choices}, got {show(value)}")
    return value


def verify_mode(value: object, at: Place) -> str:
    return _one_of(VERIFY_MODES, value, at)


# ---------------------------------------------------------------- [srs]

#: An SRS secret shorter than this is refused: it is all that keeps our SRS
#: addresses from being forged into an open relay.
MIN_SRS_SECRET = 16


def srs_secret(value: object, at: Place) -> str:
    """A secret of at least MIN_SRS_SECRET characters; never echoed in a message."""
    if not isinstance(value, str):
        raise at.fail(f"expected a string, got {show(value)}")
    if len(value) < MIN_SRS_SECRET:
        raise at.fail(f"must be at least {MIN_SRS_SECRET} characters, got {len(value)}")
    return value


def srs_secrets(value: object, at: Place) -> tuple[str, ...]:
    """Earlier secrets, each checked as ``srs_secret``."""
    return tuple(srs_secret(item, at) for item in array(value, at))


def srs_secret_file(value: object, at: Place) -> str:
    """The secret read from a file (its first line, surrounding blanks removed).

    Refused together with ``secret``: two secrets, one of them silently unused,
    is a mistake the operator must hear about.
    """
    if at.earlier.get("secret") is not None:
        raise at.fail("set either srs.secret or srs.secret_file, not both")
    file = readable_file(value, at)
    try:
        text = file.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise at.fail(f"cannot read {file} ({type(exc).__name__})") from None
    lines = text.strip().splitlines()
    return srs_secret(lines[0].strip() if lines else "", at)


# ---------------------------------------------------------------- [dkim]


def dkim_selector(value: object, at: Place) -> str:
    """A selector is a sub-domain (RFC 6376 3.1): LDH labels joined by dots."""
    text = string(value, at)
    if not is_domain_name(text.lower()):
        raise at.fail(f"expected a selector (letters, digits, hyphens, dots), got {show(value)}")
    return text
