"""The in-memory live state store (the embedded default behind RoomStateStore)."""

from __future__ import annotations

import pytest

from rooms.models import ParticipantInfo, TrackInfo, utcnow
from rooms.store import MemoryRoomStateStore, RoomStateStore


def participant(pid: str, room: str = "r1") -> ParticipantInfo:
    return ParticipantInfo(id=pid, room_id=room, identity=pid, name=pid, role="doctor",
                           grants={"subscribe": True}, joined_at=utcnow())


async def test_participants_and_tracks_round_trip() -> None:
    store: RoomStateStore = MemoryRoomStateStore()
    await store.add_participant(participant("p1"))
    await store.add_participant(participant("p2"))
    await store.add_participant(participant("p3", room="r2"))
    assert await store.count("r1") == 2 and sorted(await store.rooms()) == ["r1", "r2"]
    await store.add_track("r1", TrackInfo(id="t1", participant_id="p1", kind="video",
                                          source="camera"))
    muted = await store.set_muted("r1", "p1", "t1", True)
    assert muted is not None and muted.muted
    got = await store.get_participant("r1", "p1")
    assert got is not None and got.tracks["t1"].muted
    assert await store.remove_track("r1", "p1", "t1") is not None
    assert await store.remove_track("r1", "p1", "t1") is None
    assert await store.set_muted("r1", "p1", "t1", False) is None
    assert (await store.remove_participant("r1", "p1")) is not None
    assert [p.id for p in await store.participants("r1")] == ["p2"]
    await store.remove_participant("r1", "p2")
    assert await store.rooms() == ["r2"]


async def test_returns_copies_like_a_remote_store_would() -> None:
    store = MemoryRoomStateStore()
    original = participant("p1")
    await store.add_participant(original)
    original.name = "changed outside"
    copy = await store.get_participant("r1", "p1")
    assert copy is not None and copy.name == "p1"
    copy.name = "changed copy"
    again = await store.get_participant("r1", "p1")
    assert again is not None and again.name == "p1"


async def test_track_for_unknown_participant_is_refused() -> None:
    store = MemoryRoomStateStore()
    with pytest.raises(KeyError, match="nobody"):
        await store.add_track("r1", TrackInfo(id="t", participant_id="nobody", kind="audio",
                                              source="microphone"))
