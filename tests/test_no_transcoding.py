"""The SFU forwards media without decoding or encoding it.

The server runs in its own process with every decoder/encoder factory of aiortc and PyAV
replaced by a trap (tests/support/guarded_serve.py). Two participants publish and decode each
other's video through it; any decode or encode on the server would both break the media and
leave a record in the trap file.
"""

from __future__ import annotations

from pathlib import Path

from tests.harness import ServerProcess


async def test_server_never_creates_a_codec(tmp_path: Path) -> None:
    trap = tmp_path / "codec-trap.log"
    server = ServerProcess(tmp_path, env={"HUIZHEN_CODEC_TRAP": str(trap)},
                           entry=[str(Path(__file__).parent / "support" / "guarded_serve.py")])
    await server.start()
    people = []
    try:
        room = await server.create_room("mdt")
        a = await server.participant(room, "a")
        b = await server.participant(room, "b")
        people = [a, b]
        await a.publish(tag=1)
        await b.publish(tag=2)

        def both_decoded() -> bool:
            va, vb = a.received_from(b.id, "video"), b.received_from(a.id, "video")
            aa, ab = a.received_from(b.id, "audio"), b.received_from(a.id, "audio")
            return all(s is not None and s.frames >= 30 for s in (va, vb)) and all(
                s is not None and s.frames >= 30 for s in (aa, ab))

        assert await a.wait_until(both_decoded, timeout=20), (a.summary(), b.summary())
        va, vb = a.received_from(b.id, "video"), b.received_from(a.id, "video")
        assert va is not None and set(va.tags) == {2}
        assert vb is not None and set(vb.tags) == {1}
    finally:
        for p in people:
            await p.leave()
        server.stop()
    assert not trap.exists(), trap.read_text()
    # the trap was really armed in the server process: the guard module wrote nothing, and
    # the server log says it ran the guarded entry point
    assert "service ready" in server.log_path.read_text()
