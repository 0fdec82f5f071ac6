"""What one DKIM signature costs, and how long it keeps the event loop waiting.

    python benchmarks/dkim_sign.py              # about 15 seconds
    python benchmarks/dkim_sign.py --seconds 3  # longer runs, steadier figures

For RSA-2048 and Ed25519 keys and a 1 KiB and a 64 KiB message, prints the
time per signature and signatures per second of two signers:

- ``dkimpy``: ``dkim.sign`` alone, the library as it comes;
- ``mailwright``: ``signature_header``, what the server calls for every message.

and, for mailwright's signer, how late the event loop runs while signatures
run in worker threads as the server runs them (``asyncio.to_thread``): a 1 ms
timer on the loop, how late it fires, the median and the worst.  A signer that
holds the GIL delays the loop however many threads there are; one that
releases it does not.  Python code in any thread may still hold the loop up to
the interpreter's switch interval (``sys.getswitchinterval()``, 5 ms).

Standard library plus mailwright's own dependencies; no server, no network.
Keys are made fresh in a temporary directory and removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dkim

from mailwright.mailauth.dkim import (
    ALGORITHMS,
    SigningKey,
    generate_private_key,
    load_signing_key,
    signature_header,
    write_private_key,
)

SIZES = (1024, 64 * 1024)
HEADER = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: Carl <carl@elsewhere.test>\r\n"
    b"Subject: a benchmark message\r\n"
    b"Date: Fri, 04 Dec 2026 16:00:00 +0000\r\n"
    b"Message-ID: <bench@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
)
BODY_LINE = b"x" * 76 + b"\r\n"
#: The loop's timer in the lateness probe, and how many signing threads run beside it.
TICK = 0.001
SIGNING_THREADS = 2


def message_of(size: int) -> bytes:
    lines = (size - len(HEADER)) // len(BODY_LINE) + 1
    return HEADER + BODY_LINE * lines


def dkimpy_sign(message: bytes, key: SigningKey) -> bytes:
    signature: bytes = dkim.sign(
        message,
        key.selector.encode("ascii"),
        key.domain.encode("ascii"),
        key.private,
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=key.signature_algorithm,
        include_headers=[b"From", b"To", b"Subject", b"Date", b"From"],
        linesep=b"\r\n",
    )
    return signature


def per_signature(sign: Callable[[], object], seconds: float) -> float:
    """Seconds per call: the median of five rounds, each at least seconds / 5 long."""
    sign()  # warm: imports, first parse
    rounds = []
    for _ in range(5):
        count, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds / 5:
            sign()
            count += 1
        rounds.append(elapsed / count)
    return statistics.median(rounds)


async def loop_lateness(sign: Callable[[], object], seconds: float) -> list[float]:
    """How late a 1 ms timer fires, each time, while SIGNING_THREADS threads sign."""
    deadline = time.perf_counter() + seconds
    lateness = []

    async def signing() -> None:
        while time.perf_counter() < deadline:
            await asyncio.to_thread(sign)

    workers = [asyncio.create_task(signing()) for _ in range(SIGNING_THREADS)]
    while time.perf_counter() < deadline:
        before = time.perf_counter()
        await asyncio.sleep(TICK)
        lateness.append(time.perf_counter() - before - TICK)
    await asyncio.gather(*workers)
    return lateness


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()
    print(f"{'key':8} {'message':>8} {'signer':11} {'ms/sig':>8} {'sig/s':>8}  loop late ms")
    with tempfile.TemporaryDirectory() as folder:
        for algorithm in ALGORITHMS:
            path = Path(folder) / f"{algorithm}.key"
            write_private_key(path, generate_private_key(algorithm))
            key = load_signing_key("example.test", "bench", path)
            for size in SIZES:
                message = message_of(size)
                signers: dict[str, Callable[[], object]] = {
                    "dkimpy": lambda m=message, k=key: dkimpy_sign(m, k),
                    "mailwright": lambda m=message, k=key: signature_header(m, k),
                }
                for name, sign in signers.items():
                    seconds = per_signature(sign, args.seconds)
                    late = ""
                    if name == "mailwright":
                        lateness = asyncio.run(loop_lateness(sign, args.seconds))
                        median, worst = statistics.median(lateness), max(lateness)
                        late = f"{median * 1000:.2f} median, {worst * 1000:.2f} worst"
                    print(
                        f"{algorithm:8} {size // 1024:>6}Ki {name:11} {seconds * 1000:8.3f}"
                        f" {1 / seconds:8.0f}  {late}"
                    )


if __name__ == "__main__":
    main()
