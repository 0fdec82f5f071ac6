"""What storing a group of small messages costs before their 250s, three ways (issue 19).

    python benchmarks/local_copy_write.py --dir /work --files 20 --size 1100

Per round, ``--files`` messages of ``--size`` octets, as that many sessions ending
at once would give the queue's writer thread:

- ``append``: the bytes appended to one file, then one fdatasync (what SQLite's WAL
  does with bodies kept in the database);
- ``create``: a new file each, written, then one syncfs (write once, each file
  created before its 250);
- ``made-ahead``: the same into empty files created beforehand, then one syncfs
  (write once as the store does it, queue/sqlite/ready_files.py).

Prints the median and 90th percentile time per round; asserts nothing.  Run it by
hand on the disk to be measured, several times on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from mailwright.durable import sync_file_system


def measure(directory: str, kind: str, files: int, size: int, rounds: int) -> list[float]:
    data = b"x" * size
    times = []
    names = [
        [os.path.join(directory, f"{kind}-{r}-{i}") for i in range(files)] for r in range(rounds)
    ]
    if kind == "made-ahead":
        for group in names:
            for name in group:
                os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        sync_file_system(directory)
    log = os.open(os.path.join(directory, "log"), os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    try:
        for group in names:
            started = time.perf_counter()
            if kind == "append":
                os.write(log, data * files)
                os.fdatasync(log)
            else:
                flags = os.O_WRONLY | (os.O_CREAT | os.O_EXCL if kind == "create" else 0)
                for name in group:
                    fd = os.open(name, flags, 0o600)
                    os.write(fd, data)
                    os.close(fd)
                sync_file_system(directory)
            times.append(time.perf_counter() - started)
    finally:
        os.close(log)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--dir", default=None, help="where the files go (default: /tmp)")
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--size", type=int, default=1100)
    parser.add_argument("--rounds", type=int, default=60)
    args = parser.parse_args()
    for kind in ("append", "create", "made-ahead"):
        with tempfile.TemporaryDirectory(dir=args.dir) as directory:
            times = sorted(measure(directory, kind, args.files, args.size, args.rounds))
        median = statistics.median(times) * 1e3
        p90 = times[int(len(times) * 0.9)] * 1e3
        print(f"{kind:10} median {median:.2f} ms, p90 {p90:.2f} ms per group of {args.files}")


if __name__ == "__main__":
    main()
