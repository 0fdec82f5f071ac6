"""The Authentication-Results header (RFC 8601) we add, and the forged ones we remove.

The header is built with the authres package, one result per line (folded
after each ``;``) so a message with several DKIM signatures stays within the
line lengths of RFC 5322 2.1.1.

RFC 8601 5: a receiving ADMD removes (or renames) any Authentication-Results
header field that claims its own authserv-id before adding its own, or a
sender could write our verdict for us.  ``remove_ours`` does that on the
header section of the message as it came.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import authres
import authres.arc
import authres.dmarc

from mailwright.mailauth.arc import ArcVerdict
from mailwright.mailauth.dmarc import DmarcVerdict
from mailwright.mailauth.verify import DkimVerdict, SpfVerdict

_HEADER_NAME = b"authentication-results"
#: A comment, (possibly (nested)) one level deep is enough to skip what precedes the id.
_COMMENT = re.compile(rb"\((?:[^()\\]|\\.|\([^()]*\))*\)")
_DNS_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})$")


def header(
    authserv_id: str,
    spf: SpfVerdict | None,
    dkim: Iterable[DkimVerdict] | None,
    dmarc: DmarcVerdict | None = None,
    arc: ArcVerdict | None = None,
) -> bytes:
    """``Authentication-Results: <authserv_id>; spf=...; dkim=...; dmarc=...; arc=...`` with
    CRLF, or b"" when no check ran.  A DKIM check that found no signature says ``dkim=none``.
    DMARC's policy goes in a comment and as ``policy.dmarc`` (authres's DMARC result).
    ARC's result carries the client's address as ``smtp.remote-ip`` (RFC 8617 6), and a
    ``fail`` that is only temporary says so in a comment."""
    results: list[authres.core.AuthenticationResult] = []
    if spf is not None:
        if spf.identity == "helo":
            results.append(authres.SPFAuthenticationResult(result=spf.result, smtp_helo=spf.domain))
        else:
            results.append(
                authres.SPFAuthenticationResult(result=spf.result, smtp_mailfrom=spf.domain)
            )
    if dkim is not None:
        verdicts = list(dkim)
        if not verdicts:
            results.append(authres.DKIMAuthenticationResult(result="none"))
        for verdict in verdicts:
            results.append(
                authres.DKIMAuthenticationResult(
                    result=verdict.result,
                    header_d=_name(verdict.domain),
                    header_s=_name(verdict.selector),
                )
            )
    if dmarc is not None:
        results.append(
            authres.dmarc.DMARCAuthenticationResult(
                result=dmarc.result,
                result_comment=f"p={dmarc.policy}" if dmarc.policy else None,
                header_from=_name(dmarc.from_domain),
                policy=dmarc.policy,
            )
        )
    if arc is not None:
        results.append(
            authres.arc.ARCAuthenticationResult(
                result=arc.result,
                result_comment="key lookup failed for now" if arc.temporary else None,
                smtp_remote_ip=arc.remote_ip,
            )
        )
    if not results:
        return b""
    # authres quotes a value that needs it; the names are checked above all the same.
    lines = ";\r\n\t".join(str(result) for result in results)
    return f"Authentication-Results: {authserv_id};\r\n\t{lines}\r\n".encode()


def _name(value: str | None) -> str | None:
    """A domain or selector from the message, only when it looks like one (else left out)."""
    return value if value is not None and _DNS_NAME.match(value) else None


def authserv_id(value: bytes) -> bytes:
    """The authserv-id of an Authentication-Results value, lower-cased (RFC 8601 2.2):
    the first token or quoted string, after any comments.  Lenient by design: a
    header that only roughly follows the grammar is still recognised as ours."""
    text = _COMMENT.sub(b" ", value.replace(b"\r\n", b"")).strip()
    if text.startswith(b'"'):
        end = text.find(b'"', 1)
        token = text[1:end] if end != -1 else text[1:]
    else:
        token = re.split(rb"[;\s]", text, maxsplit=1)[0]
    return token.strip().lower()


def remove_ours(message: bytes, our_id: str) -> tuple[bytes, int]:
    """``message`` without the Authentication-Results fields naming ``our_id``, and how many.

    Only the header section is looked at (up to the first empty line); fields
    are unfolded by their continuation lines (RFC 5322 2.2.3).  Linear in the
    header section.
    """
    end = message.find(b"\r\n\r\n")
    head_end = len(message) if end == -1 else end + 2
    ours = our_id.lower().encode("ascii", "replace")
    kept: list[bytes] = []
    removed = 0
    dropping = False
    start = 0
    while start < head_end:
        stop = message.find(b"\r\n", start, head_end)
        stop = head_end if stop == -1 else stop + 2
        line = message[start:stop]
        start = stop
        if line[:1] in (b" ", b"\t"):  # a continuation of the field before
            if not dropping:
                kept.append(line)
            continue
        name, colon, value = line.partition(b":")
        dropping = False
        if colon and name.strip().lower() == _HEADER_NAME:
            whole = value + _continuation(message, start, head_end)
            if authserv_id(whole) == ours:
                dropping = True
                removed += 1
                continue
        kept.append(line)
    if not removed:
        return message, 0
    return b"".join(kept) + message[head_end:], removed


def _continuation(message: bytes, start: int, head_end: int) -> bytes:
    """The continuation lines of a field that begin at ``start``, joined."""
    parts = []
    while start < head_end and message[start : start + 1] in (b" ", b"\t"):
        stop = message.find(b"\r\n", start, head_end)
        stop = head_end if stop == -1 else stop + 2
        parts.append(message[start:stop])
        start = stop
    return b"".join(parts)
