"""How long after the kernel received a datagram a process reads it, on this machine: the floor
under any server's added latency (bench/README.md, "What the N = 1 gap is not").

A sender on one core sends 1200-byte datagrams at ``--rate`` per second to a receiver pinned to
the other core, which reads each one with its kernel receive timestamp (``SO_TIMESTAMPNS``) and
notes ``time.time()`` − stamp. Modes, measured one after the other in one run:

* ``blocking``: a blocking ``recvmsg`` loop (what a thread of its own would do);
* ``asyncio``: a reader callback on an asyncio selector loop with a 0.25 s timer beside it
  (what the server's socket readers are).

Prints p50/p90 in µs per mode and the asyncio ÷ blocking ratio of the p50s (``--json``: one
object, ``{mode}_p50_us`` / ``{mode}_p90_us``, ``received`` per mode, ``asyncio_vs_blocking``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import selectors
import socket
import struct
import sys
import time

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("=qq")


def _read_all(sock: socket.socket, delays: list[float]) -> bool:
    """Read what waits; True once the sender's last datagram came."""
    while True:
        try:
            data, ancillary, _, _ = sock.recvmsg(2048, socket.CMSG_SPACE(_TIMESPEC.size))
        except BlockingIOError:
            return False
        now = time.time()
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = _TIMESPEC.unpack_from(value)
                delays.append(now - (sec + nsec * 1e-9))
        if data == b"end":
            return True


def _send(port: int, count: int, rate: float) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1 % (os.cpu_count() or 1)})
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    time.sleep(0.3)
    for _ in range(count):
        tx.sendto(b"x" * 1200, ("127.0.0.1", port))
        time.sleep(1 / rate)
    tx.sendto(b"end", ("127.0.0.1", port))


def measure(mode: str, count: int, rate: float) -> list[float]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    pid = os.fork()
    if pid == 0:
        try:
            _send(rx.getsockname()[1], count, rate)
        finally:
            os._exit(0)
    delays: list[float] = []
    if mode == "blocking":
        while not _read_all(rx, delays):
            pass
    else:
        rx.setblocking(False)
        loop = asyncio.SelectorEventLoop(selectors.DefaultSelector())
        done: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if _read_all(rx, delays) and not done.done():
                done.set_result(None)

        def tick() -> None:  # a timer beside it, as the server's adaptation ticks
            if not done.done():
                loop.call_later(0.25, tick)

        loop.add_reader(rx.fileno(), readable)
        tick()
        loop.run_until_complete(done)
        loop.remove_reader(rx.fileno())
        loop.close()
    os.waitpid(pid, 0)
    rx.close()
    return sorted(delays)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="datagrams per mode")
    parser.add_argument("--rate", type=float, default=130.0, help="datagrams per second "
                        "(130: a 1 Mbit/s video's packets and its audio)")
    parser.add_argument("--json", action="store_true", help="one JSON object to stdout")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    result: dict[str, float] = {}
    for mode in ("blocking", "asyncio"):
        delays = measure(mode, args.count, args.rate)
        if not delays:
            print(f"{mode}: no receive timestamps on this system", file=sys.stderr)
            return 1
        result[f"{mode}_received"] = len(delays)
        result[f"{mode}_p50_us"] = round(delays[len(delays) // 2] * 1e6, 1)
        result[f"{mode}_p90_us"] = round(delays[int(len(delays) * 0.9)] * 1e6, 1)
        if not args.json:
            print(f"{mode:9s} n={len(delays)}  p50 {result[f'{mode}_p50_us']:.0f} µs  "
                  f"p90 {result[f'{mode}_p90_us']:.0f} µs")
    result["asyncio_vs_blocking"] = round(result["asyncio_p50_us"] / result["blocking_p50_us"], 2)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"ratio asyncio/blocking (p50): {result['asyncio_vs_blocking']:.2f}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
