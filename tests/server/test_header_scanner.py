"""The Received: counter for loop detection reads each octet of a header section a bounded
number of times, however small the pieces it arrives in (a slow sender is no CPU attack)."""

from __future__ import annotations

from mailwright.server.transaction import HeaderScanner

HEADERS = b"".join(b"Received: from hop%d.example by next.example; now\r\n" % i for i in range(40))
MESSAGE = HEADERS + b"Subject: loop\r\n\r\nbody\r\nReceived: not a header\r\n"


def test_header_section_in_one_byte_pieces_is_scanned_in_linear_time() -> None:
    scanner = HeaderScanner()
    for i in range(len(MESSAGE)):
        scanner.feed(MESSAGE[i : i + 1])
    assert scanner.done and scanner.received == 40
    # each octet is looked at with the three before it at most: 4n, not n**2 / 2
    assert scanner.examined <= 4 * len(MESSAGE)


def test_blank_line_split_across_pieces_ends_the_header_section() -> None:
    scanner = HeaderScanner()
    scanner.feed(b"Received: a\r\n\r")
    scanner.feed(b"\nReceived: in the body\r\n")
    assert scanner.done and scanner.received == 1


def test_header_section_without_end_is_cut_at_the_limit() -> None:
    scanner = HeaderScanner(limit=1000)
    for _ in range(100):
        scanner.feed(b"Received: x\r\n")
    # 1000 octets: 76 whole lines of 13 and "Received: x" of the 77th
    assert scanner.done and scanner.received == 77
