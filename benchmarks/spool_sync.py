"""How to make a group of new spool files durable at once: measured, not guessed (issue 19).

Each round creates ``--files`` new files of ``--size`` octets in a fresh directory
(as that many sessions ending at the same moment would), then makes them durable
one of three ways, and reports the median time per round and per file:

- ``parallel``: fdatasync of each file from a pool of threads (what the store does:
  its sync pool has 4 threads);
- ``serial``: fdatasync of each file, one after the other, from one thread;
- ``syncfs``: one syncfs(2) of the whole file system for the round.

Every variant then fsyncs the directory once (the store does that once per group
commit).  Run it by hand, on the disk to be measured (``--dir``); it prints figures
and asserts nothing.  On a shared machine run it several times and read the spread.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import ctypes
import os
import statistics
import tempfile
import time
from collections.abc import Callable

_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(fd: int) -> None:
    if _libc.syncfs(fd) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def make_files(directory: str, count: int, body: bytes) -> list[int]:
    fds = []
    for n in range(count):
        fd = os.open(os.path.join(directory, f"f{n}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, body)
        fds.append(fd)
    return fds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dir", default=None, help="where to create the files (default: /tmp)")
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    body = os.urandom(args.size)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)

    def parallel(fds: list[int]) -> None:
        list(pool.map(os.fdatasync, fds))

    def serial(fds: list[int]) -> None:
        for fd in fds:
            os.fdatasync(fd)

    def whole_fs(fds: list[int]) -> None:
        syncfs(fds[0])

    variants: dict[str, Callable[[list[int]], None]] = {
        "parallel": parallel,
        "serial": serial,
        "syncfs": whole_fs,
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(dir=args.dir) as top:
        for round_number in range(args.rounds):
            for name, sync in variants.items():  # interleaved: the machine's noise hits all
                directory = os.path.join(top, f"{name}{round_number}")
                os.mkdir(directory)
                fds = make_files(directory, args.files, body)
                started = time.perf_counter()
                sync(fds)
                dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
                os.fsync(dir_fd)
                times[name].append(time.perf_counter() - started)
                os.close(dir_fd)
                for fd in fds:
                    os.close(fd)
    print(f"{args.files} files of {args.size} octets per round, {args.rounds} rounds")
    for name, values in times.items():
        median = statistics.median(values)
        spread = f"{min(values) * 1e3:.2f}-{max(values) * 1e3:.2f}"
        per_file = median / args.files * 1e6
        print(f"{name:9} {median * 1e3:7.2f} ms/round ({spread}), {per_file:6.0f} us/file")


if __name__ == "__main__":
    main()
