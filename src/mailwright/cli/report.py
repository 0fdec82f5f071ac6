"""Turning replies into the lines ``send`` and ``probe`` print.

Each exchange is one line, ``COMMAND -> REPLY``, followed by indented lines
that explain it: the reference's one-line explanation (``codes.one_line``) and,
for the two replies that name another address (251 and 551, RFC 5321 3.4),
what the client can do with it.  The tool's frame is English; explanations
follow ``--lang``, as they do for ``mailwright explain``.
"""

from __future__ import annotations

import io
import re
from typing import Final, TextIO, cast

from mailwright.cli.tls import failure_reason as tls_failure_reason
from mailwright.client import (
    CommandRefused,
    ConnectError,
    ConnectionLost,
    SmtpTimeout,
    TlsError,
)
from mailwright.codes import one_line
from mailwright.errors import RemoteProtocolError
from mailwright.logfmt import printable
from mailwright.model import Address
from mailwright.protocol.commands import CommandSyntaxError, parse_path
from mailwright.protocol.reply import Reply

INDENT: Final = "    "

_BRACKETED: Final = re.compile(r"<([^<>\s]+)>")
_BARE: Final = re.compile(r"[^\s<>()\[\],;:\"']+@[^\s<>()\[\],;:\"']+")

_HINTS: Final[dict[str, dict[str, str]]] = {
    "en": {
        "forward": (
            "the server will forward this message; to avoid the relay, send to <{address}> directly"
        ),
        "forward_unnamed": "the server will forward this message to a mailbox elsewhere",
        "moved": "the server says this user has moved: try <{address}>",
        "moved_unnamed": "the server says this user is not local but names no address to try",
        "follow": "run again with --follow-referrals to send there",
        "after_mail": "this follows from the refused MAIL: there is no transaction to add to",
    },
    "zh": {
        "forward": "服务器会转发这封邮件；如不想经它中转，可直接发送到 <{address}>",
        "forward_unnamed": "服务器会把这封邮件转发到别处的邮箱",
        "moved": "服务器表示该用户已迁移：请改发到 <{address}>",
        "moved_unnamed": "服务器表示该用户不在本地，但没有给出可改发的地址",
        "follow": "加上 --follow-referrals 重新运行即可发送到该地址",
        "after_mail": "这是 MAIL 被拒绝的后果：服务器没有可加入收件人的事务",
    },
}


def exchange(command: str, reply: Reply) -> str:
    """``RCPT TO:<bob@example.test> -> 251 2.1.5 User not local; will forward to <...>``."""
    return f"{command} -> {reply}"


def explanation(reply: Reply, lang: str) -> str:
    """The reference's one line about ``reply``, indented under the exchange."""
    return INDENT + one_line(reply, lang)


def referral_hints(
    reply: Reply, recipient: Address, lang: str, *, suggest_follow: bool = True
) -> list[str]:
    """What a 251 or 551 means for the client, indented; nothing for other replies.

    ``suggest_follow`` adds the advice to run ``send`` with --follow-referrals
    (not when it is already in use, nor from ``probe``, which has no such option).
    """
    hints = _HINTS[lang]
    if reply.code not in (251, 551):
        return []
    address = suggested_address(reply, recipient)
    if reply.code == 251:
        if address is None:
            return [INDENT + hints["forward_unnamed"]]
        return [INDENT + hints["forward"].format(address=address)]
    if address is None:
        return [INDENT + hints["moved_unnamed"]]
    lines = [INDENT + hints["moved"].format(address=address)]
    if suggest_follow:
        lines.append(INDENT + hints["follow"])
    return lines


def codes(reply: Reply) -> str:
    """``550 5.1.1``: the reply's codes without its text, for one-line summaries."""
    return f"{reply.code} {reply.enhanced}" if reply.enhanced else str(reply.code)


def after_refused_mail(lang: str) -> str:
    """Why a RCPT or DATA got 503 when it was pipelined after a refused MAIL (RFC 2920 3.1)."""
    return INDENT + _HINTS[lang]["after_mail"]


def suggested_address(reply: Reply, recipient: Address | None = None) -> Address | None:
    """The address a 251 or 551 names (RFC 5321 3.4 puts it in the text, in no fixed form).

    Addresses in angle brackets come first, then bare addr-specs; each must
    parse as an SMTP path, and the recipient's own address (which many
    servers quote in the reply) is skipped.
    """
    text = reply.text
    candidates = _BRACKETED.findall(text) + [m.rstrip(".") for m in _BARE.findall(text)]
    for candidate in candidates:
        address = parse_mailbox(candidate)
        if address is None:
            continue
        if recipient is not None and address.key == recipient.key:
            continue
        return address
    return None


def parse_mailbox(text: str) -> Address | None:
    """``local@domain`` checked by the protocol's own grammar, or None."""
    try:
        address = parse_path(f"<{text}>", null_allowed=False, smtputf8=True, recipient=True)
    except CommandSyntaxError:
        return None
    if address is None or not address.domain:
        return None
    return address


def failure_lines(exc: Exception, lang: str, *, last_command: str = "") -> list[str]:
    """What went wrong with a session that could not go on, and the server's last word.

    ``last_command`` (from the transcript) says where it happened, which the
    error alone often cannot: "closed the connection" after EHLO and after
    the body are different problems.
    """
    where = f" (after {last_command})" if last_command else ""
    if isinstance(exc, ConnectError):
        lines = [f"error: cannot connect: {exc}"]
    elif isinstance(exc, SmtpTimeout):
        lines = [f"error: no answer in time{where}: {exc}"]
    elif isinstance(exc, CommandRefused):
        what = "the session" if exc.command == "connection" else exc.command
        lines = [f"error: the server refused {what}: {exc.reply}"]
    elif isinstance(exc, TlsError):
        lines = [f"error: TLS failed: {tls_failure_reason(exc)}"]
    elif isinstance(exc, ConnectionLost):
        lines = [f"error: the connection closed early{where}: {exc}"]
    elif isinstance(exc, RemoteProtocolError):
        lines = [f"error: the server broke the protocol{where}: {exc}"]
    else:
        lines = [f"error: {exc}"]
    reply = getattr(exc, "reply", None)
    if isinstance(reply, Reply) and not 200 <= reply.code < 300:
        lines.append(explanation(reply, lang))
    return lines


def console(stream: TextIO) -> TextIO:
    """``stream`` for the report: a terminal that cannot show Chinese gets escapes, not a
    traceback, and text from the server cannot drive the terminal (``PrintableWriter``)."""
    if isinstance(stream, io.TextIOWrapper):
        stream.reconfigure(errors="backslashreplace")
    return cast(TextIO, PrintableWriter(stream))


class PrintableWriter(io.TextIOBase):
    """Writes to ``stream`` with every non-printable code point but the line feed escaped.

    The report quotes the server: its greeting and replies, a certificate's
    names, the words of an error.  A reply line cannot hold CR or LF, but it
    can hold ESC, NUL, NEL or U+2028, which would clear or retitle the
    operator's terminal or forge a line of the report.  Escaping at the stream
    catches every one of those, wherever it is printed; our own lines end with
    ``print``'s line feed, the one control character let through.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        length = len(text)
        if not text.isprintable():
            text = "\n".join(printable(line) for line in text.split("\n"))
        self._stream.write(text)
        return length

    def flush(self) -> None:
        self._stream.flush()
