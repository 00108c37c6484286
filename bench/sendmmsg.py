"""Does one ``sendmmsg`` for a packet's whole fan-out pay on a shared UDP socket (issue 13)?

The shared media port (``media.udp_port``, media/udpmux.py) makes it possible: every
subscriber's copy of a packet leaves from the same socket, so one system call could carry them
all. This measures the sender's CPU per datagram, side by side in one run, both ways, for the
same N destinations on loopback: ``socket.sendto`` per destination (what media/sendpath.py
does) and libc's ``sendmmsg`` through cffi (ABI mode: no compiler), the message vector
filled in Python as the send path would have to.

    .venv/bin/python bench/sendmmsg.py                 # 200 destinations, 1100-byte packets
    .venv/bin/python bench/sendmmsg.py --destinations 50 --rounds 40 --json

Receivers are drained outside the timed parts; times are the process's CPU time
(``time.process_time``), best of ``--repeat``.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time
from typing import Any

from cffi import FFI

_ffi = FFI()
_ffi.cdef("""
struct iovec { void *iov_base; size_t iov_len; };
struct msghdr { void *msg_name; unsigned int msg_namelen; struct iovec *msg_iov;
                size_t msg_iovlen; void *msg_control; size_t msg_controllen; int msg_flags; };
struct mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; };
int sendmmsg(int sockfd, struct mmsghdr *msgvec, unsigned int vlen, int flags);
""")


def sockaddr_in(host: str, port: int) -> bytes:
    """A ``struct sockaddr_in`` (family in host byte order, port and address in network)."""
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H4s8x", port, socket.inet_aton(host))


def drain(receivers: list[socket.socket]) -> int:
    got = 0
    for r in receivers:
        try:
            while True:
                r.recv(4096)
                got += 1
        except BlockingIOError:
            pass
    return got


def run(destinations: int, rounds: int, size: int) -> dict[str, Any]:
    libc: Any = _ffi.dlopen(None)
    receivers = []
    for _ in range(destinations):
        r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        r.bind(("127.0.0.1", 0))
        r.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        r.setblocking(False)
        receivers.append(r)
    addrs = [r.getsockname() for r in receivers]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    payload = bytes(size)
    names = _ffi.new("char[]", b"".join(sockaddr_in(h, p) for h, p in addrs))
    msgs = _ffi.new("struct mmsghdr[]", destinations)
    iovs = _ffi.new("struct iovec[]", destinations)
    fd = sender.fileno()
    plain = batched = 0.0
    received = 0
    try:
        for _ in range(rounds):
            start = time.process_time()
            for addr in addrs:
                sender.sendto(payload, addr)
            plain += time.process_time() - start
            received += drain(receivers)

            start = time.process_time()
            buf = _ffi.from_buffer(payload)
            for i in range(destinations):  # what a send path would fill per packet
                iovs[i].iov_base = buf
                iovs[i].iov_len = size
                hdr = msgs[i].msg_hdr
                hdr.msg_name = names + 16 * i
                hdr.msg_namelen = 16
                hdr.msg_iov = iovs + i
                hdr.msg_iovlen = 1
            sent = 0
            while sent < destinations:
                n = libc.sendmmsg(fd, msgs + sent, destinations - sent, 0)
                if n <= 0:
                    raise OSError(_ffi.errno, "sendmmsg failed")
                sent += n
            batched += time.process_time() - start
            received += drain(receivers)
    finally:
        sender.close()
        for r in receivers:
            r.close()
    packets = destinations * rounds
    return {"destinations": destinations, "rounds": rounds, "bytes": size,
            "sendto_us_per_packet": round(plain / packets * 1e6, 3),
            "sendmmsg_us_per_packet": round(batched / packets * 1e6, 3),
            "sendmmsg_vs_sendto": round(batched / plain, 3) if plain else None,
            "received_of_sent": round(received / (2 * packets), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--destinations", type=int, default=200)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--bytes", type=int, default=1100)
    p.add_argument("--repeat", type=int, default=3, help="runs; the best of each is kept")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if sys.platform != "linux":
        raise SystemExit("sendmmsg is Linux's")
    runs = [run(a.destinations, a.rounds, a.bytes) for _ in range(a.repeat)]
    best = min(runs, key=lambda r: r["sendto_us_per_packet"])
    best["sendmmsg_us_per_packet"] = min(r["sendmmsg_us_per_packet"] for r in runs)
    best["sendmmsg_vs_sendto"] = round(best["sendmmsg_us_per_packet"]
                                       / best["sendto_us_per_packet"], 3)
    if a.json:
        print(json.dumps(best))
        return
    print(f"{a.destinations} destinations, {a.bytes}-byte datagrams, {a.rounds} rounds, "
          f"best of {a.repeat}:")
    print(f"  sendto per destination: {best['sendto_us_per_packet']:.3f} µs CPU per datagram")
    print(f"  one sendmmsg per round: {best['sendmmsg_us_per_packet']:.3f} µs CPU per datagram")
    print(f"  sendmmsg ÷ sendto: {best['sendmmsg_vs_sendto']:.2f} "
          "(below 1: batching pays); received "
          f"{best['received_of_sent']:.1%} of what was sent")


if __name__ == "__main__":
    main()
