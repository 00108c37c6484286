"""The fan-out's CPU per packet and subscriber in one process, without the network.

A ``SourceTrack`` gets a VP8 stream (``--packets`` packets of ``--size`` bytes per frame) and
fans it out to ``--subscribers`` DownTracks whose sinks (``SrtpUdpSink``, media/sendpath.py)
protect with AES-256-GCM and send to as many loopback sockets. The process's CPU time
(``getrusage``: user and system) is taken around the fan-out only; the receiving sockets are
drained outside it. The figure is CPU per packet and subscriber, best of ``--repeat`` runs.

``--baseline FILE`` also measures another version of media/sendpath.py (e.g. one taken from
git: ``git show REV:media/sendpath.py > /tmp/old_sendpath.py``), alternating the two in the
same run, and prints new ÷ baseline: side by side, so the shared machine's drift cancels.

    .venv/bin/python bench/sendpath.py
    .venv/bin/python bench/sendpath.py --baseline /tmp/old_sendpath.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import resource
import socket
import sys
from types import ModuleType
from typing import Any

import _paths  # noqa: F401  (first: the project's packages before bench/'s scripts)
from aioice.candidate import Candidate
from aioice.ice import CandidatePair, StunProtocol
from pylibsrtp import Policy, Session

from media import rtp
from media import sendpath as current
from media.downtrack import DownTrack
from media.source import SourceTrack

GCM = Policy.SRTP_PROFILE_AEAD_AES_256_GCM


class _Obj:
    pass


class _Sender(StunProtocol):
    """The sending side's ICE protocol: receives nothing, belongs to no connection."""

    def connection_lost(self, exc: Exception | None) -> None:
        pass


def load(path: str) -> ModuleType:
    """Another version of media/sendpath.py, as a module of its own."""
    spec = importlib.util.spec_from_file_location("sendpath_baseline", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Rig:
    """One source, N DownTracks, their sinks (of ``module``'s SrtpUdpSink), N receivers."""

    def __init__(self, module: ModuleType, subscribers: int) -> None:
        self.module = module
        self.n = subscribers
        self.receivers: list[socket.socket] = []
        self.transports: list[Any] = []
        self.source = SourceTrack("t", "video", "video/VP8", 90000, lambda ssrc: None,
                                  lambda ssrc, lost: None)

    async def start(self) -> Rig:
        loop = asyncio.get_running_loop()
        for i in range(self.n):
            rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rx.bind(("127.0.0.1", 0))
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
            rx.setblocking(False)
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: _Sender(None),  # type: ignore[arg-type]
                local_addr=("127.0.0.1", 0))
            remote = Candidate(foundation="1", component=1, transport="udp", priority=1,
                               host="127.0.0.1", port=rx.getsockname()[1], type="host")
            dtls: Any = _Obj()
            dtls.transport = _Obj()
            dtls.transport._connection = _Obj()
            dtls.transport._connection._nominated = {1: CandidatePair(protocol, remote)}
            dtls._tx_srtp = Session(Policy(key=os.urandom(44), srtp_profile=GCM,
                                           ssrc_type=Policy.SSRC_ANY_OUTBOUND))
            sink_class = self.module.SrtpUdpSink
            sink = sink_class(label=f"s{i}")
            sink._dtls = dtls
            down = DownTrack("video", 1000 + i, sink)
            down.configure(96, 90000, rtp.ExtensionIds(), "bench")
            down.active = True
            down.attach(self.source)
            self.receivers.append(rx)
            self.transports.append(transport)
        return self

    def drain(self) -> int:
        got = 0
        for rx in self.receivers:
            while True:
                try:
                    rx.recv(4096)
                except BlockingIOError:
                    break
                got += 1
        return got

    def close(self) -> None:
        for rx in self.receivers:
            rx.close()
        for transport in self.transports:
            transport.close()


class Stream:
    """A VP8 stream: a keyframe first, then inter frames, ``packets`` of ``size`` bytes each."""

    def __init__(self, packets: int, size: int) -> None:
        self.packets = packets
        self.size = size
        self.seq = 0
        self.ts = 0
        self.frames = 0

    def frame(self, source: SourceTrack) -> None:
        for i in range(self.packets):
            if i == 0:  # S=1, PID 0; P=0 on the very first frame: a keyframe
                payload = b"\x10" + (b"\x00" if self.frames == 0 else b"\x01")
            else:
                payload = b"\x00\x00"
            payload += bytes(self.size - len(payload))
            source.on_packet(0x1234, self.seq, self.ts, int(i == self.packets - 1), payload, 0,
                             None, None)
            self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 3000) & 0xFFFFFFFF
        self.frames += 1


def cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def run(rig: Rig, stream: Stream, frames: int) -> tuple[float, float]:
    """(user, system) µs of CPU per packet and subscriber over ``frames`` frames; every
    subscriber must have received every packet."""
    user = system = 0.0
    done = received = 0
    while done < frames:
        batch = min(10, frames - done)  # the receivers' buffers hold 10 frames
        u0, s0 = cpu()
        for _ in range(batch):
            stream.frame(rig.source)
        u1, s1 = cpu()
        user += u1 - u0
        system += s1 - s0
        done += batch
        received += rig.drain()
    sent = frames * stream.packets * rig.n
    if received != sent:
        raise SystemExit(f"{rig.module.__name__}: {received} of {sent} datagrams arrived")
    per = 1e6 / sent
    return user * per, system * per


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=16)
    parser.add_argument("--packets", type=int, default=4, help="packets per frame")
    parser.add_argument("--size", type=int, default=1000, help="payload bytes per packet")
    parser.add_argument("--frames", type=int, default=300, help="frames per run")
    parser.add_argument("--repeat", type=int, default=7, help="runs of each; the best counts")
    parser.add_argument("--baseline", metavar="FILE",
                        help="another media/sendpath.py to measure side by side")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if min(args.subscribers, args.packets, args.frames, args.repeat) < 1 or args.size < 16:
        parser.error("--subscribers, --packets, --frames and --repeat must be at least 1, "
                     "--size at least 16")
    versions = {"current": current}
    if args.baseline:
        versions["baseline"] = load(args.baseline)
    rigs = {name: await Rig(module, args.subscribers).start()
            for name, module in versions.items()}
    streams = {name: Stream(args.packets, args.size) for name in versions}
    best: dict[str, tuple[float, float]] = {}
    try:
        for name in versions:  # warm up: the keyframe, the first sends
            run(rigs[name], streams[name], 20)
        for _ in range(args.repeat):
            for name in versions:
                user, system = run(rigs[name], streams[name], args.frames)
                if name not in best or user + system < sum(best[name]):
                    best[name] = (user, system)
    finally:
        for rig in rigs.values():
            rig.close()
    result: dict[str, Any] = {
        "settings": {"subscribers": args.subscribers, "packets_per_frame": args.packets,
                     "payload_bytes": args.size, "frames": args.frames,
                     "repeat": args.repeat, "baseline": args.baseline},
        "us_per_packet_subscriber": {name: {"user": round(u, 3), "system": round(s, 3),
                                            "total": round(u + s, 3)}
                                     for name, (u, s) in best.items()},
        "current_vs_baseline": (round(sum(best["current"]) / sum(best["baseline"]), 3)
                                if "baseline" in best else None),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"fan-out to {args.subscribers} subscribers, {args.packets} x {args.size} B per frame,"
          f" AES-256-GCM; CPU per packet and subscriber, best of {args.repeat}:")
    for name, figures in result["us_per_packet_subscriber"].items():
        print(f"  {name:9s} {figures['total']:.2f} µs (user {figures['user']:.2f}, "
              f"system {figures['system']:.2f})")
    if result["current_vs_baseline"] is not None:
        print(f"  current ÷ baseline: {result['current_vs_baseline']:.2f}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
