#!/usr/bin/env python3
"""Times the kind of write the journal of own bulletins makes before a bulletin leaves its
node (one 4 KiB block, O_DIRECT | O_DSYNC, in a file of fixed size), so that a propagation
benchmark's publish-call tail can be told apart from the disk's (docs/BENCHMARKS.md).

    scripts/disk-sync-probe.py [--dir DIR] [--writes 400] [--gap-ms 50] [--load 0]
        [--load-rate 1] [--load-bytes 65536]

--dir is where the probe's files go (default: the current directory); put it on the disk
the node's store is on (a temporary directory may be in memory).

--load N starts N other processes beside the probe, each appending --load-bytes and
calling fsync --load-rate times a second (about what N nodes' folds write), for as long
as the probe runs. Prints p50, p90, p99 and the slowest write, in milliseconds. Linux only.
"""

import argparse
import mmap
import multiprocessing
import os
import signal
import sys
import tempfile
import time

BLOCK = 4096


def load(path: str, rate: float, size: int, stop) -> None:
    """Appends `size` bytes and fsyncs, `rate` times a second, until told to stop (or the
    probe is gone)."""
    parent = os.getppid()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    data = os.urandom(size)
    try:
        while not stop.is_set() and os.getppid() == parent:
            os.write(fd, data)
            os.fsync(fd)
            stop.wait(1.0 / rate)
    finally:
        os.close(fd)


def probe(path: str, writes: int, gap: float) -> list:
    """The time of each synchronous block write, in milliseconds."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT | os.O_DSYNC, 0o600)
    try:
        # A file of fixed size, written once, as the journal is: a write changes no metadata.
        os.ftruncate(fd, 1000 * BLOCK)
        block = mmap.mmap(-1, BLOCK)  # page-aligned, as O_DIRECT needs
        for i in range(1000):
            os.pwrite(fd, block, i * BLOCK)
        block.write(b"x" * BLOCK)
        times = []
        for i in range(writes):
            start = time.perf_counter()
            os.pwrite(fd, block, (i % 1000) * BLOCK)
            times.append((time.perf_counter() - start) * 1000.0)
            time.sleep(gap)
        return times
    finally:
        os.close(fd)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=".")
    parser.add_argument("--writes", type=int, default=400)
    parser.add_argument("--gap-ms", type=float, default=50.0)
    parser.add_argument("--load", type=int, default=0)
    parser.add_argument("--load-rate", type=float, default=1.0)
    parser.add_argument("--load-bytes", type=int, default=65536)
    args = parser.parse_args()
    if args.writes < 1 or args.gap_ms < 0 or args.load < 0 or args.load_rate <= 0 or args.load_bytes < 1:
        parser.error("--writes and --load-bytes must be at least 1, --gap-ms and --load not negative, --load-rate above 0")
    if not os.path.isdir(args.dir):
        parser.error(f"--dir {args.dir}: no such directory")
    # A stop by signal ends the probe as Ctrl-C does: the loads are stopped and the files removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    with tempfile.TemporaryDirectory(prefix="herald-disk-probe-", dir=args.dir) as tmp:
        stop = multiprocessing.Event()
        loads = []
        try:
            for i in range(args.load):
                process = multiprocessing.Process(
                    target=load,
                    args=(os.path.join(tmp, f"load-{i}"), args.load_rate, args.load_bytes, stop),
                    daemon=True,
                )
                process.start()
                loads.append(process)
            times = sorted(probe(os.path.join(tmp, "probe"), args.writes, args.gap_ms / 1000.0))
        except OSError as e:
            print(f"cannot probe in {args.dir}: {e}", file=sys.stderr)
            return 1
        finally:
            stop.set()
            for process in loads:
                process.join()
        failed = [p.exitcode for p in loads if p.exitcode != 0]
        if failed:
            print(f"{len(failed)} of the {args.load} loads failed (exit codes {failed}): the figures are not what was asked for", file=sys.stderr)
            return 1
    n = len(times)
    pick = lambda q: times[min(n - 1, int(n * q))]
    print(
        f"{n} writes every {args.gap_ms:g} ms beside {args.load} loads: "
        f"p50 {pick(0.5):.2f} p90 {pick(0.9):.2f} p99 {pick(0.99):.2f} slowest {times[-1]:.2f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
