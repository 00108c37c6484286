"""The ``huizhen loadtest`` subcommand: its arguments (``add_parser``, added to ``huizhen``'s
subcommands by huizhen/cli.py) and ``cmd_loadtest``, which checks them, runs the load test
(loadtest/orchestrator.py) and prints the result (loadtest/report.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from typing import Any

from huizhen.remote import CliError
from loadtest.orchestrator import DEFAULT_ROLES, run_loadtest
from loadtest.report import render


def cmd_loadtest(args: argparse.Namespace) -> None:
    """Run the load test; a CliError (bad arguments, a failed run) goes to ``huizhen``'s
    ``main()``, which prints it and exits with EXIT_FAILED."""
    if args.publishers < 0 or args.subscribers < 0 or args.publishers + args.subscribers == 0:
        raise CliError("give at least one publisher or subscriber")
    if (args.duration <= 0 or args.per_process < 1 or args.join_rate < 0 or args.report <= 0
            or args.warmup < 0):
        raise CliError("--duration and --report must be positive, --per-process at least 1, "
                       "--join-rate and --warmup not negative")
    # Ctrl-C ends up in the same clean-up, also when started with SIGINT ignored (as
    # background jobs are); SIGTERM too (run_loadtest)
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = asyncio.run(run_loadtest(args))
    except asyncio.CancelledError:  # SIGTERM
        raise KeyboardInterrupt from None
    print(json.dumps(result, indent=2) if args.json else render(result), flush=True)
    problems = result["failed"] + sum(
        1 for s in result["per_subscriber"]
        if args.publishers and not s.get("fps") and s.get("error") is None)
    if problems:
        raise CliError(f"{problems} participant(s) failed or received no video (see above)")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """The ``loadtest`` subcommand, added to ``huizhen``'s subparsers."""
    p: argparse.ArgumentParser = sub.add_parser(
        "loadtest", help="load-test a running service with many headless participants",
        description="Create a room (or use --room), start publishers (test pattern + tone) "
                    "and subscribers (no decoding; light viewers by default) in worker "
                    "processes, and report received fps, bitrate, loss, join-to-first-frame, "
                    "signalling bytes per viewer, the load tester's own CPU and loop lag, "
                    "and (local server) server CPU.")
    p.add_argument("--server", help="service URL (default: from the configuration)")
    p.add_argument("--api-key", help="API key id (default: the configured one)")
    p.add_argument("--api-secret", help="its secret (or HUIZHEN_API_SECRET; write "
                   "--api-secret=VALUE if it starts with '-')")
    p.add_argument("--publishers", type=int, default=1, help="publishers (default 1)")
    p.add_argument("--subscribers", type=int, default=10, help="subscribers (default 10)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--room", help="use this existing room (default: create one)")
    where.add_argument("--kind", default="broadcast", choices=sorted(DEFAULT_ROLES),
                       help="kind of the room to create (default broadcast)")
    p.add_argument("--publisher-role", help="role of publishers' tokens (default per kind: "
                   "presenter in broadcast/mdt)")
    p.add_argument("--subscriber-role", help="role of subscribers' tokens (default per kind: "
                   "viewer in broadcast/mdt)")
    p.add_argument("--duration", type=float, default=30,
                   help="seconds measured after everyone joined (default 30)")
    p.add_argument("--warmup", type=float, default=3,
                   help="seconds between the end of the join phase and the measurement "
                        "(default 3)")
    p.add_argument("--join-rate", type=float, default=5,
                   help="participants joining per second (default 5; 0 = all at once)")
    p.add_argument("--video-kbps", type=int, default=1000,
                   help="publishers' video bitrate ceiling, kbit/s (default 1000)")
    p.add_argument("--per-process", type=int, default=8,
                   help="participants per worker process (default 8; light viewers are "
                        "cheap: 50 per process is fine)")
    p.add_argument("--viewer", choices=("light", "full"), default="light",
                   help="what runs a subscriber: light (default: ICE, DTLS, SRTP, receiver "
                        "reports and NACKs in one datagram handler and one RTCP timer per "
                        "worker process, no aiortc peer connection; loadtest/lightviewer.py) "
                        "or full (the SDK's aiortc peer connection, as `huizhen join`)")
    p.add_argument("--ice-address", action="append",
                   help="local address to gather ICE candidates on (repeatable; default "
                        "127.0.0.1 for a server on 127.0.0.1/localhost, else every interface "
                        "but loopback)")
    p.add_argument("--ready-timeout", type=float, default=30,
                   help="seconds a participant may take to join and get its first frame "
                        "(default 30)")
    p.add_argument("--report", type=float, default=5, help="progress every N seconds "
                   "(default 5)")
    p.add_argument("--keep-room", action="store_true",
                   help="do not end the room created for the test")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_loadtest, insecure=False)
    return p
