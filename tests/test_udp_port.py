"""One UDP port for all media (issue 13, test 3; media/udpmux.py; the default): a 3-party room
works with the SFU listening on exactly one UDP port (and, with ``media.udp_port: 0``, on a port
per connection), and the port learns a sender only from an authenticated connectivity check."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import pytest
from aioice import stun
from aioice.ice import Connection

from media.udpmux import UdpMux
from tests.harness import ServerProcess, free_udp_port


def udp_ports_of(pid: int) -> set[int]:
    """The local UDP ports the process ``pid`` has sockets on (``ss``)."""
    out = subprocess.run(["ss", "-uanpH"], capture_output=True, text=True, check=True).stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines()
            if f"pid={pid}," in line}


@pytest.mark.parametrize("one_port", [True, False], ids=["one port (default)", "per connection"])
async def test_a_three_party_room_on_one_udp_port(tmp_path: Path, one_port: bool) -> None:
    port = free_udp_port() if one_port else 0
    server = await ServerProcess(tmp_path, env={"HUIZHEN_MEDIA__UDP_PORT": str(port)}).start()
    people = []
    try:
        room = await server.create_room("mdt")
        for n, identity in enumerate(("dr-chair", "dr-radiology", "dr-pathology")):
            p = await server.participant(room, identity, "specialist" if n else "host")
            await p.publish(tag=n + 1)
            people.append(p)

        def everyone_decodes_everyone() -> bool:
            return all(p.frames_from(o.id, "video") >= 20 and p.frames_from(o.id, "audio") >= 20
                       for p in people for o in people if o is not p)

        assert await people[0].wait_until(everyone_decodes_everyone, 20), \
            [p.summary() for p in people]
        assert server.proc is not None
        ports = udp_ports_of(server.proc.pid)
        if one_port:  # 3 publish + 3 subscribe connections, and one UDP socket: the port
            assert ports == {port}
        else:  # media.udp_port: 0: a port of its own for each of the 6 connections
            assert len(ports) >= 6, ports
    finally:
        for p in people:
            await p.leave()
        server.stop()


async def test_the_port_learns_a_sender_only_from_an_authenticated_check() -> None:
    mux = UdpMux(["127.0.0.1"], free_udp_port())
    mux.start()
    connection = Connection(ice_controlling=False)
    try:
        setattr(connection, "_huizhen_mux", mux)  # noqa: B010
        await connection.gather_candidates()
        (candidate,) = connection.local_candidates
        assert candidate.port == mux.port and candidate.host == "127.0.0.1"
        loop = asyncio.get_running_loop()
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.setblocking(False)
        client.bind(("127.0.0.1", 0))
        here = client.getsockname()
        (shared,) = mux.sockets

        def check(password: str) -> bytes:
            request = stun.Message(message_method=stun.Method.BINDING,
                                   message_class=stun.Class.REQUEST)
            request.attributes["USERNAME"] = f"{connection.local_username}:them"
            request.attributes["PRIORITY"] = 1
            request.add_message_integrity(password.encode())
            request.add_fingerprint()
            return bytes(request)

        # not a check, and a check with the wrong password: dropped, the sender not learned
        for data in (b"\x80" + b"\x00" * 40, check("not-the-password")):
            await loop.sock_sendto(client, data, ("127.0.0.1", mux.port))
        for _ in range(50):
            if shared.dropped_in >= 2:
                break
            await asyncio.sleep(0.01)
        assert shared.dropped_in == 2 and here not in shared.by_addr
        # the right password: learned, and the connection answers (a Binding response)
        await loop.sock_sendto(client, check(connection.local_password), ("127.0.0.1", mux.port))
        answer = await asyncio.wait_for(loop.sock_recv(client, 2048), 2)
        assert stun.parse_message(answer).message_class == stun.Class.RESPONSE
        assert shared.by_addr[here].receiver is connection
        client.close()
        # closed: its sender and its username are forgotten
        await connection.close()
        assert not shared.by_addr and not shared.by_ufrag
    finally:
        mux.close()


def test_a_port_in_use_says_so() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        try:
            UdpMux(["127.0.0.1"], port)
        except OSError as exc:
            assert f"cannot listen on UDP port {port}" in str(exc)
            assert "media.udp_port" in str(exc)
        else:
            raise AssertionError("a taken port was not refused")
