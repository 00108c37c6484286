"""The ``huizhen`` command: run the service, create rooms and links, join as a headless participant.

Commands that talk to a running service (``room create``, ``token create``, ``demo``,
``drain``: an admin key, docs/api.md "Admin API") use the
REST API with a short-lived API token signed by the configured key (in dev mode, the key in
``<data_dir>/dev-credentials.json``), or ``--api-key`` / ``--api-secret`` /
``HUIZHEN_API_KEY`` / ``HUIZHEN_API_SECRET`` for a remote service (huizhen/remote.py).
``huizhen loadtest`` is the load tester's own package (loadtest/); ``huizhen recording`` works
on the database and recording storage directly (recording/cli.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any
from urllib.parse import urlparse

from huizhen.config import ConfigError, generate_secret
from huizhen.logs import setup_logging
from huizhen.remote import EXIT_FAILED, EXIT_USAGE, Api, CliError, load_cli_settings
from loadtest.cli import add_parser as add_loadtest_parser
from recording.cli import add_parser as add_recording_parser
from records.cli import add_parser as add_audit_parser


# ---- REST ------------------------------------------------------------------------------------
def _print(data: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    elif isinstance(data, dict):
        for key, value in data.items():
            print(f"{key}: {value}")


async def cmd_room_create(args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"kind": args.kind, "title": args.title}
    if args.patient:
        body["patient_ref"] = args.patient
    if args.start:
        body["scheduled_start"] = args.start
    if args.end:
        body["scheduled_end"] = args.end
    room = await Api(args).call("POST", "/api/rooms", body)
    _print(room if args.json else {"room": room["id"], "kind": room["kind"],
                                   "title": room["title"]}, args.json)


async def cmd_token_create(args: argparse.Namespace) -> None:
    data = await Api(args).call("POST", f"/api/rooms/{args.room}/tokens", {
        "identity": args.identity, "name": args.name or args.identity, "role": args.role,
        "ttl_s": args.ttl})
    _print(data if args.json else {"join_url": data["join_url"], "token": data["token"]},
           args.json)


async def cmd_demo(args: argparse.Namespace) -> None:
    api = Api(args)
    room = await api.call("POST", "/api/rooms", {"kind": "clinic",
                                                 "title": "Demo video clinic"})
    doctor = await api.call("POST", f"/api/rooms/{room['id']}/tokens", {
        "identity": "doctor-demo", "name": "Dr Demo", "role": "doctor", "ttl_s": 4 * 3600})
    patient = await api.call("POST", f"/api/rooms/{room['id']}/tokens", {
        "identity": "patient-demo", "name": "Patient", "role": "patient", "ttl_s": 4 * 3600})
    print(f"Clinic room {room['id']} created.\n")
    print(f"Doctor link (open on this computer):\n  {doctor['join_url']}\n")
    print(f"Patient link (open in another browser or on a phone):\n  {patient['join_url']}")


async def cmd_drain(args: argparse.Namespace) -> None:
    """Drain a running node (POST /api/admin/drain, an admin key), then wait until it no longer
    answers (its API closes as it exits): new rooms and joins go elsewhere, its clients
    reconnect, its recordings finish."""
    api = Api(args)
    state = (await api.call("POST", "/api/admin/drain"))["drain"]
    print(f"draining {api.url} (waits up to {state['timeout_s']:g} s for its rooms to empty)",
          file=sys.stderr)
    if args.no_wait:
        _print(state, args.json)
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state["timeout_s"] + args.grace
    last: dict[str, Any] = state
    while loop.time() < deadline:
        await asyncio.sleep(0.5)
        try:
            last = (await api.call("GET", "/api/admin/node"))["drain"] or last
        except CliError:  # the node has gone: drained, its API closed, the process exiting
            print("drained: the node no longer answers (its process exits as its shutdown "
                  "completes)", file=sys.stderr)
            _print(last, args.json)
            return
    raise CliError(f"the node at {api.url} still answers {args.grace:g} s after its drain "
                   f"limit (phase: {last.get('phase')}); stop it with SIGTERM twice")


# ---- join ------------------------------------------------------------------------------------
def _parse_join_url(url: str) -> tuple[str, str, str]:
    parsed = urlparse(url)
    parts = parsed.path.strip("/").split("/")
    token = parsed.fragment[2:] if parsed.fragment.startswith("t=") else ""
    if len(parts) != 2 or parts[0] != "join" or not token:
        raise CliError("a join link looks like https://host/join/<room>#t=<token>")
    return f"{parsed.scheme}://{parsed.netloc}", parts[1], token


async def cmd_join(args: argparse.Namespace) -> None:
    from media.ice import IcePolicy
    from sdk.participant import JoinRefused, Participant

    if args.url:
        server, room, token = _parse_join_url(args.url)
    else:
        if not (args.server and args.room and args.token):
            raise CliError("give a join link, or --server, --room and --token")
        server, room, token = args.server, args.room, args.token
    host = urlparse(server).hostname or ""
    addresses = args.ice_address or (["127.0.0.1"] if host in ("127.0.0.1", "localhost")
                                     else None)
    policy = IcePolicy(gather_addresses=addresses)
    policy.install()
    participant = Participant(server, room, token, ice=policy, reconnect=True)
    try:
        joined = await participant.join()
    except JoinRefused as exc:
        raise CliError(f"join refused: {exc.code}: {exc.message}") from exc
    print(f"joined {joined['room']['id']} as {joined['me']['name']} ({joined['me']['role']}); "
          f"{len(joined['participants'])} others here", file=sys.stderr)
    try:
        if args.publish != "none":
            await _publish(participant, args)
        elapsed = 0.0
        while args.duration <= 0 or elapsed < args.duration:
            await asyncio.sleep(min(args.report, args.duration - elapsed if args.duration > 0
                                    else args.report))
            elapsed += args.report
            if participant.ended:
                print("the server closed the connection", file=sys.stderr)
                break
            print(json.dumps(participant.summary()), flush=True)
    finally:
        await participant.leave()


async def _publish(participant: Any, args: argparse.Namespace) -> None:
    from sdk.participant import RequestFailed

    video_track = audio_track = None
    if args.publish != "pattern":
        from aiortc.contrib.media import MediaPlayer

        try:
            player = MediaPlayer(args.publish, loop=True)
        except Exception as exc:  # av raises its own error types for unreadable media
            raise CliError(f"cannot open {args.publish!r} for publishing: {exc}") from exc
        video_track, audio_track = player.video, player.audio
    try:
        await participant.publish(audio=True, video=True, tag=args.tag,
                                  video_track=video_track, audio_track=audio_track)
    except RequestFailed as exc:
        raise CliError(f"publishing refused: {exc.code}: {exc.message}") from exc
    print("publishing", file=sys.stderr)


# ---- serve -----------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> None:
    args.announce_dev_key = True
    settings = load_cli_settings(args)
    if args.port is not None:
        settings.server.port = args.port
    setup_logging(settings.logging.level, settings.logging.format)
    from signaling.app import serve

    print(f"Huizhen on {settings.base_url} ({settings.mode} mode). "
          f"Try: huizhen demo", file=sys.stderr)
    asyncio.run(serve(settings))


def cmd_key_generate(args: argparse.Namespace) -> None:
    key = args.name
    secret = generate_secret()
    print(f"key: {key}\nsecret: {secret}\n\nConfigure it with:\n"
          f"  HUIZHEN_AUTH__API_KEYS='[{{\"key\": \"{key}\", \"secret\": \"{secret}\"}}]'")


# ---- argument parsing --------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="huizhen", description="Huizhen video consultation "
                                     "service (WebRTC SFU)")
    parser.add_argument("--config", help="configuration file (default: $HUIZHEN_CONFIG or "
                        "./config.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.set_defaults(func=cmd_serve)

    def remote(p: argparse.ArgumentParser) -> None:
        p.add_argument("--server", help="service URL (default: from the configuration)")
        p.add_argument("--api-key", help="API key id (default: the configured one)")
        p.add_argument("--api-secret", help="its secret (or HUIZHEN_API_SECRET; write "
                       "--api-secret=VALUE if it starts with '-')")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--insecure", action="store_true",
                       help="accept a self-signed certificate (dev/LAN testing only)")

    room = sub.add_parser("room", help="rooms").add_subparsers(dest="room_cmd", required=True)
    create = room.add_parser("create", help="create a room")
    create.add_argument("--kind", required=True,
                        choices=["clinic", "joint_clinic", "ward_round", "mdt", "broadcast"])
    create.add_argument("--title", required=True)
    create.add_argument("--patient", help="patient reference (e.g. a FHIR Patient id)")
    create.add_argument("--start", help="scheduled start, ISO 8601 with time zone")
    create.add_argument("--end", help="scheduled end, ISO 8601 with time zone")
    remote(create)
    create.set_defaults(func=cmd_room_create, is_async=True)

    token = sub.add_parser("token", help="participant tokens").add_subparsers(
        dest="token_cmd", required=True)
    tcreate = token.add_parser("create", help="create a participant token and join link")
    tcreate.add_argument("--room", required=True)
    tcreate.add_argument("--identity", required=True)
    tcreate.add_argument("--name")
    tcreate.add_argument("--role", required=True)
    tcreate.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")
    remote(tcreate)
    tcreate.set_defaults(func=cmd_token_create, is_async=True)

    drain = sub.add_parser("drain", help="drain a running node (admin key), wait until it "
                           "no longer answers (exiting): clients reconnect elsewhere or to its "
                           "successor")
    drain.add_argument("--no-wait", action="store_true",
                       help="start the drain and return; do not wait for the node to go")
    drain.add_argument("--grace", type=float, default=15.0,
                       help="seconds to wait past the node's drain limit (default 15)")
    remote(drain)
    drain.set_defaults(func=cmd_drain, is_async=True)

    demo = sub.add_parser("demo", help="create a clinic room and print doctor/patient links")
    remote(demo)
    demo.set_defaults(func=cmd_demo, is_async=True)

    join = sub.add_parser("join", help="join as a headless participant")
    join.add_argument("url", nargs="?", help="a join link (…/join/<room>#t=<token>)")
    join.add_argument("--server")
    join.add_argument("--room")
    join.add_argument("--token")
    join.add_argument("--publish", default="pattern",
                      help="pattern (default), none, or a media file/device for ffmpeg")
    join.add_argument("--tag", type=int, default=0, help="test pattern colour (0-7)")
    join.add_argument("--duration", type=float, default=0, help="seconds; 0 = until Ctrl-C")
    join.add_argument("--report", type=float, default=5, help="stats every N seconds")
    join.add_argument("--ice-address", action="append",
                      help="local address to gather ICE candidates on (repeatable)")
    join.set_defaults(func=cmd_join, is_async=True)

    add_loadtest_parser(sub)  # huizhen loadtest …
    add_recording_parser(sub)  # huizhen recording …
    add_audit_parser(sub)  # huizhen audit …

    key = sub.add_parser("key", help="API keys").add_subparsers(dest="key_cmd", required=True)
    gen = key.add_parser("generate", help="print a new API key and secret")
    gen.add_argument("--name", default="hospital")
    gen.set_defaults(func=cmd_key_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "is_async", False):
            asyncio.run(args.func(args))
        else:
            args.func(args)
    except ConfigError as exc:
        print(f"huizhen: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CliError as exc:
        print(f"huizhen: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
