"""Just enough X.509 to say which certificate a server presented.

``probe`` must show the certificate of a server whose certificate does *not*
verify, since that is when people need to see it, and the ``ssl`` module only
decodes certificates that verified (``getpeercert()`` is ``{}`` otherwise).
The ``cryptography`` package is not a dependency, so this module walks the
DER encoding (ITU-T X.690) of the few fields a person checks: subject,
issuer, subject alternative names and validity (RFC 5280 4.1).  Anything it
cannot read is reported as unreadable; the SHA-256 fingerprint is always
available because it is computed over the raw bytes.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

# Universal tags (X.690 8.1.2) and the context tags RFC 5280 uses.
_SEQUENCE: Final = 0x30
_SET: Final = 0x31
_OID: Final = 0x06
_OCTET_STRING: Final = 0x04
_UTC_TIME: Final = 0x17
_GENERALIZED_TIME: Final = 0x18
_VERSION: Final = 0xA0  # [0] EXPLICIT Version
_EXTENSIONS: Final = 0xA3  # [3] EXPLICIT Extensions
_SAN_DNS: Final = 0x82  # GeneralName dNSName [2] IA5String
_SAN_IP: Final = 0x87  # GeneralName iPAddress [7] OCTET STRING
_SAN_EMAIL: Final = 0x81  # GeneralName rfc822Name [1]
_SAN_URI: Final = 0x86  # GeneralName uniformResourceIdentifier [6]

_SUBJECT_ALT_NAME: Final = "2.5.29.17"
#: Attribute types a person recognises (RFC 5280 4.1.2.4, RFC 4519).
_ATTRIBUTE_NAMES: Final[dict[str, str]] = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "1.2.840.113549.1.9.1": "emailAddress",
}
#: A DER element found in the bytes: (tag, start of its value, end of its value).
_Element = tuple[int, int, int]
#: Longest length field accepted: four octets is 4 GiB, far more than any certificate.
_MAX_LENGTH_OCTETS: Final = 4


class CertificateFormatError(ValueError):
    """The DER bytes are not a certificate this reader understands."""


@dataclass(frozen=True, slots=True)
class CertificateSummary:
    """The parts of a certificate a person compares with what they expected.

    ``subject`` and ``issuer`` are distinguished names written ``CN=..., O=...``
    in the order of the certificate; ``names`` are the subject alternative
    names (``DNS:mx.example.net``, ``IP:192.0.2.1``), which are what a client
    checks the host name against (RFC 6125 6.4.4).
    """

    subject: str
    issuer: str
    names: tuple[str, ...]
    not_before: datetime | None
    not_after: datetime | None
    sha256: str

    @property
    def self_signed(self) -> bool:
        return self.subject == self.issuer


def fingerprint(der: bytes) -> str:
    """SHA-256 of the certificate as colon-separated hex, as browsers and openssl show it."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def summarize(der: bytes) -> CertificateSummary:
    """Read a DER certificate; raises CertificateFormatError when it cannot."""
    try:
        return _summarize(der)
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, CertificateFormatError):
            raise
        raise CertificateFormatError(f"unreadable certificate: {exc}") from None


def _summarize(der: bytes) -> CertificateSummary:
    tag, start, end = _element(der, 0)
    if tag != _SEQUENCE or end != len(der):
        raise CertificateFormatError("not a DER certificate (Certificate SEQUENCE)")
    (tbs_tag, tbs_start, tbs_end), *_ = _children(der, start, end)
    if tbs_tag != _SEQUENCE:
        raise CertificateFormatError("no TBSCertificate")
    fields = _children(der, tbs_start, tbs_end)
    if fields and fields[0][0] == _VERSION:
        fields = fields[1:]
    # serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ...
    if len(fields) < 6:
        raise CertificateFormatError("TBSCertificate is missing fields")
    issuer = _name(der, fields[2])
    not_before, not_after = _validity(der, fields[3])
    subject = _name(der, fields[4])
    names: tuple[str, ...] = ()
    for tag, field_start, field_end in fields[6:]:
        if tag == _EXTENSIONS:
            names = _alt_names(der, field_start, field_end)
    return CertificateSummary(
        subject=subject,
        issuer=issuer,
        names=names,
        not_before=not_before,
        not_after=not_after,
        sha256=fingerprint(der),
    )


# ------------------------------------------------------------------ DER


def _element(data: bytes, pos: int) -> _Element:
    """One TLV at ``pos``: (tag, start of the value, end of the value)."""
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise CertificateFormatError("multi-octet tags do not occur in certificates")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= _MAX_LENGTH_OCTETS:
            raise CertificateFormatError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    end = pos + length
    if end > len(data):
        raise CertificateFormatError("truncated DER element")
    return tag, pos, end


def _children(data: bytes, start: int, end: int) -> list[_Element]:
    found = []
    pos = start
    while pos < end:
        element = _element(data, pos)
        if element[2] > end:
            raise CertificateFormatError("DER element runs past its parent")
        found.append(element)
        pos = element[2]
    return found


def _oid(value: bytes) -> str:
    """Dotted form of an OBJECT IDENTIFIER's content octets (X.690 8.19)."""
    numbers = []
    number = 0
    for octet in value:
        number = (number << 7) | (octet & 0x7F)
        if not octet & 0x80:
            numbers.append(number)
            number = 0
    if not numbers or value[-1] & 0x80:
        raise CertificateFormatError("malformed OID")
    # The first subidentifier packs the first two arcs: 40 * X + Y, X at most 2.
    first = min(numbers[0] // 40, 2)
    return ".".join(str(n) for n in (first, numbers[0] - 40 * first, *numbers[1:]))


def _string(tag: int, value: bytes) -> str:
    if tag == 0x1E:  # BMPString
        return value.decode("utf-16-be")
    if tag == 0x1C:  # UniversalString
        return value.decode("utf-32-be")
    if tag == 0x14:  # T61String: in practice Latin-1
        return value.decode("latin-1")
    return value.decode("utf-8", errors="replace")  # UTF8, Printable, IA5, Visible


def _name(data: bytes, element: _Element) -> str:
    """A Name (SEQUENCE OF RDN SET OF AttributeTypeAndValue) as ``CN=x, O=y``."""
    tag, start, end = element
    if tag != _SEQUENCE:
        raise CertificateFormatError("Name is not a SEQUENCE")
    parts = []
    for rdn_tag, rdn_start, rdn_end in _children(data, start, end):
        if rdn_tag != _SET:
            raise CertificateFormatError("RDN is not a SET")
        for _, atv_start, atv_end in _children(data, rdn_start, rdn_end):
            (oid_tag, oid_start, oid_end), (value_tag, value_start, value_end) = _children(
                data, atv_start, atv_end
            )[:2]
            if oid_tag != _OID:
                raise CertificateFormatError("attribute type is not an OID")
            oid = _oid(data[oid_start:oid_end])
            label = _ATTRIBUTE_NAMES.get(oid, oid)
            parts.append(f"{label}={_string(value_tag, data[value_start:value_end])}")
    return ", ".join(parts)


def _validity(data: bytes, element: _Element) -> tuple[datetime | None, datetime | None]:
    tag, start, end = element
    if tag != _SEQUENCE:
        raise CertificateFormatError("Validity is not a SEQUENCE")
    times = [_time(t, data[s:e]) for t, s, e in _children(data, start, end)[:2]]
    if len(times) != 2:
        raise CertificateFormatError("Validity needs two times")
    return times[0], times[1]


def _time(tag: int, value: bytes) -> datetime | None:
    """UTCTime (two-digit year, RFC 5280 4.1.2.5.1) or GeneralizedTime, in UTC."""
    text = value.decode("ascii").rstrip("Z")
    if tag == _UTC_TIME:
        year = int(text[:2])
        text = str(1900 + year if year >= 50 else 2000 + year) + text[2:]
    elif tag != _GENERALIZED_TIME:
        return None
    return datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)


def _alt_names(data: bytes, start: int, end: int) -> tuple[str, ...]:
    """The subjectAltName extension's names, from the [3] Extensions field."""
    (seq_tag, seq_start, seq_end), *_ = _children(data, start, end)
    if seq_tag != _SEQUENCE:
        raise CertificateFormatError("Extensions is not a SEQUENCE")
    for _, ext_start, ext_end in _children(data, seq_start, seq_end):
        parts = _children(data, ext_start, ext_end)
        if not parts or parts[0][0] != _OID:
            continue
        if _oid(data[parts[0][1] : parts[0][2]]) != _SUBJECT_ALT_NAME:
            continue
        value = next((p for p in parts[1:] if p[0] == _OCTET_STRING), None)
        if value is None:
            raise CertificateFormatError("subjectAltName without a value")
        inner_tag, inner_start, inner_end = _element(data, value[1])
        if inner_tag != _SEQUENCE:
            raise CertificateFormatError("subjectAltName is not a SEQUENCE")
        return tuple(
            _general_name(tag, data[s:e]) for tag, s, e in _children(data, inner_start, inner_end)
        )
    return ()


def _general_name(tag: int, value: bytes) -> str:
    if tag == _SAN_DNS:
        return f"DNS:{value.decode('ascii', errors='replace')}"
    if tag == _SAN_IP and len(value) in (4, 16):
        return f"IP:{ipaddress.ip_address(value)}"
    if tag == _SAN_EMAIL:
        return f"email:{value.decode('ascii', errors='replace')}"
    if tag == _SAN_URI:
        return f"URI:{value.decode('ascii', errors='replace')}"
    return f"other name [{tag & 0x1F}]"
