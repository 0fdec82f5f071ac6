"""What each EHLO keyword means, for ``probe``'s capability list (RFC 5321 4.1.1.1).

Only keywords of published extensions are described; anything else (vendor
``X-`` keywords, typos) is shown as "extension not described" rather than
guessed at.
"""

from __future__ import annotations

from typing import Final

from mailwright.protocol.client import Capabilities

MEGABYTE: Final = 1_000_000

_DESCRIBED: Final[dict[str, dict[str, str]]] = {
    "en": {
        "PIPELINING": "several commands may be sent without waiting for each reply (RFC 2920)",
        "SIZE": "messages up to {size} are accepted; larger ones are refused at MAIL (RFC 1870)",
        "SIZE_NONE": "the client may declare the message size; no fixed limit announced (RFC 1870)",
        "8BITMIME": "message bodies may contain 8-bit text (RFC 6152)",
        "SMTPUTF8": "addresses and headers may be UTF-8 (RFC 6531)",
        "ENHANCEDSTATUSCODES": "replies carry enhanced status codes such as 5.1.1 (RFC 2034)",
        "STARTTLS": "the session can be encrypted with STARTTLS (RFC 3207)",
        "AUTH": "clients may authenticate (RFC 4954) with: {params}",
        "AUTH_NONE": "clients may authenticate (RFC 4954), but no mechanism is listed",
        "CHUNKING": "the message may be sent in BDAT chunks instead of DATA (RFC 3030)",
        "DSN": "delivery status notifications may be requested per recipient (RFC 3461)",
        "BINARYMIME": "binary message bodies are accepted with BDAT (RFC 3030)",
        "REQUIRETLS": "a sender may require TLS on every hop of the message (RFC 8689)",
        "HELP": "the HELP command answers (RFC 5321 4.1.1.8)",
        "VRFY": "the VRFY command may confirm addresses (RFC 5321 3.5)",
        "EXPN": "the EXPN command may expand mailing lists (RFC 5321 3.5)",
        "ETRN": "a client may ask the server to start its queue for a domain (RFC 1985)",
        "DELIVERBY": "a sender may set a delivery deadline (RFC 2852)",
        "MT-PRIORITY": "a sender may set a message priority (RFC 6710)",
        "LIMITS": "the server announces its limits on recipients and transactions (RFC 9422)",
        "UNKNOWN": "extension not described",
    },
    "zh": {
        "PIPELINING": "可以连续发送多条命令，不必逐条等待回复（RFC 2920）",
        "SIZE": "接受不超过 {size} 的邮件；更大的邮件在 MAIL 时即被拒绝（RFC 1870）",
        "SIZE_NONE": "客户端可以声明邮件大小；服务器未公布固定上限（RFC 1870）",
        "8BITMIME": "邮件正文可以包含 8 位文本（RFC 6152）",
        "SMTPUTF8": "地址和邮件头可以使用 UTF-8（RFC 6531）",
        "ENHANCEDSTATUSCODES": "回复带有 5.1.1 这样的增强状态码（RFC 2034）",
        "STARTTLS": "可以用 STARTTLS 加密会话（RFC 3207）",
        "AUTH": "客户端可以认证（RFC 4954），机制：{params}",
        "AUTH_NONE": "客户端可以认证（RFC 4954），但未列出任何机制",
        "CHUNKING": "可以用 BDAT 分块发送邮件，代替 DATA（RFC 3030）",
        "DSN": "可以按收件人请求投递状态通知（RFC 3461）",
        "BINARYMIME": "用 BDAT 时接受二进制正文（RFC 3030）",
        "REQUIRETLS": "发件人可以要求邮件的每一跳都使用 TLS（RFC 8689）",
        "HELP": "支持 HELP 命令（RFC 5321 4.1.1.8）",
        "VRFY": "VRFY 命令可以确认地址（RFC 5321 3.5）",
        "EXPN": "EXPN 命令可以展开邮件列表（RFC 5321 3.5）",
        "ETRN": "客户端可以请求服务器为某个域名启动队列投递（RFC 1985）",
        "DELIVERBY": "发件人可以设定投递期限（RFC 2852）",
        "MT-PRIORITY": "发件人可以设定邮件优先级（RFC 6710）",
        "LIMITS": "服务器公布其收件人数和事务数的上限（RFC 9422）",
        "UNKNOWN": "未说明的扩展",
    },
}


def describe_capabilities(capabilities: Capabilities, lang: str) -> list[tuple[str, str]]:
    """``(keyword with parameters, meaning)`` for every keyword, in the order offered."""
    return [
        (" ".join((keyword, *params)), describe(keyword, params, lang))
        for keyword, params in capabilities.keywords.items()
    ]


def describe(keyword: str, params: tuple[str, ...], lang: str) -> str:
    texts = _DESCRIBED[lang]
    key = keyword.upper()
    if key == "SIZE":
        size = params[0] if params else ""
        if not (size.isascii() and size.isdigit()) or int(size) == 0:
            return texts["SIZE_NONE"]
        return texts["SIZE"].format(size=megabytes(int(size), lang))
    if key == "AUTH":
        return texts["AUTH"].format(params=", ".join(params)) if params else texts["AUTH_NONE"]
    return texts.get(key, texts["UNKNOWN"])


def megabytes(octets: int, lang: str = "en") -> str:
    """``26214400`` -> ``26.2 MB (26214400 octets)``: decimal megabytes, the exact count kept."""
    if lang == "zh":
        return f"{octets / MEGABYTE:.1f} MB（{octets} 字节）"
    return f"{octets / MEGABYTE:.1f} MB ({octets} octets)"
