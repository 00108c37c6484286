"""rooms/policy.py: the kind × role table that every permission decision reads."""

from __future__ import annotations

import pytest

from rooms.policy import (
    POLICIES,
    Grants,
    PolicyError,
    Role,
    RoomKind,
    grants_for,
    kind_policy,
    role_policy,
)

# (publish_audio, publish_video, publish_screen, subscribe, send_data, moderate, record, sign,
#  promote)
HOST = (True, True, True, True, True, True, True, False, False)
AV_SCREEN = (True, True, True, True, True, False, False, False, False)
AV = (True, True, False, True, True, False, False, False, False)
WATCH = (False, False, False, True, True, False, False, False, False)
CAMERA = (True, True, False, False, False, False, False, False, False)


def with_(grants: tuple[bool, ...], sign: bool = False, promote: bool = False
          ) -> tuple[bool, ...]:
    return (*grants[:7], sign, promote)


#: the whole table, written out by hand: (kind, role) -> (grants, waits in the lobby)
EXPECTED: dict[tuple[str, str], tuple[tuple[bool, ...], bool]] = {
    ("clinic", "host"): (HOST, False),
    ("clinic", "doctor"): (HOST, False),
    ("clinic", "nurse"): (AV, False),
    ("clinic", "interpreter"): (AV, False),
    ("clinic", "patient"): (AV, True),
    ("clinic", "guardian"): (AV, True),
    ("joint_clinic", "host"): (with_(HOST, sign=True), False),
    ("joint_clinic", "doctor"): (with_(HOST, sign=True), False),
    ("joint_clinic", "specialist"): (with_(AV_SCREEN, sign=True), False),
    ("joint_clinic", "nurse"): (AV, False),
    ("joint_clinic", "interpreter"): (AV, False),
    ("joint_clinic", "patient"): (AV, False),
    ("joint_clinic", "guardian"): (AV, False),
    ("ward_round", "host"): (with_(HOST, sign=True), False),
    ("ward_round", "doctor"): (with_(AV_SCREEN, sign=True), False),
    ("ward_round", "specialist"): (with_(AV_SCREEN, sign=True), False),
    ("ward_round", "nurse"): (AV, False),
    ("mdt", "host"): (with_(HOST, sign=True), False),
    ("mdt", "moderator"): (with_(HOST, sign=True), False),
    ("mdt", "presenter"): (AV_SCREEN, False),
    ("mdt", "specialist"): (AV_SCREEN, False),
    ("mdt", "doctor"): (AV_SCREEN, False),
    ("mdt", "patient"): (AV, True),
    ("mdt", "viewer"): (WATCH, False),
    ("broadcast", "host"): (with_(HOST, promote=True), False),
    ("broadcast", "moderator"): (with_(HOST, promote=True), False),
    ("broadcast", "presenter"): (AV_SCREEN, False),
    ("broadcast", "camera"): (CAMERA, False),
    ("broadcast", "viewer"): (WATCH, False),
}

MAX_PARTICIPANTS = {"clinic": 6, "joint_clinic": 8, "ward_round": 12, "mdt": 24,
                    "broadcast": 1000}

ALL_KINDS = [k.value for k in RoomKind]
ALL_ROLES = [r.value for r in Role]
NOT_ALLOWED = [(k, r) for k in ALL_KINDS for r in ALL_ROLES if (k, r) not in EXPECTED]


def flags(grants: Grants) -> tuple[bool, ...]:
    return (grants.publish_audio, grants.publish_video, grants.publish_screen,
            grants.subscribe, grants.send_data, grants.moderate, grants.record, grants.sign,
            grants.promote)


def test_the_table_covers_exactly_the_expected_kinds() -> None:
    assert set(ALL_KINDS) == {"clinic", "joint_clinic", "ward_round", "mdt", "broadcast"}
    assert set(POLICIES) == set(RoomKind)
    assert {k for k, _ in EXPECTED} == set(ALL_KINDS)


@pytest.mark.parametrize(("kind", "role"), sorted(EXPECTED))
def test_grants_for_matches_the_expected_table(kind: str, role: str) -> None:
    expected_grants, expected_lobby = EXPECTED[(kind, role)]
    assert flags(grants_for(kind, role)) == expected_grants
    assert role_policy(kind, role).waits_in_lobby is expected_lobby


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_each_kind_allows_exactly_the_expected_roles(kind: str) -> None:
    expected = {r for k, r in EXPECTED if k == kind}
    assert {r.value for r in kind_policy(kind).roles} == expected


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_each_kind_has_a_moderating_host_role(kind: str) -> None:
    policy = kind_policy(kind)
    assert policy.host_role in policy.roles
    host = policy.roles[policy.host_role].grants
    assert host.moderate
    # the host can run the consultation: talk, show, share a screen
    assert host.publish_audio and host.publish_video and host.publish_screen
    assert not policy.roles[policy.host_role].waits_in_lobby
    moderators = [r for r, rp in policy.roles.items() if rp.grants.moderate]
    assert moderators, f"{kind} has nobody who may moderate"


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_max_participants(kind: str) -> None:
    assert kind_policy(kind).max_participants == MAX_PARTICIPANTS[kind]


@pytest.mark.parametrize(
    "kind", [k for k in ALL_KINDS if Role.VIEWER in POLICIES[RoomKind(k)].roles])
def test_viewers_never_publish(kind: str) -> None:
    grants = grants_for(kind, "viewer")
    assert not grants.publish_audio
    assert not grants.publish_video
    assert not grants.publish_screen
    assert not grants.moderate
    assert grants.subscribe
    for media_kind, source in [("audio", "microphone"), ("video", "camera"),
                               ("video", "screen"), ("audio", "screen")]:
        assert not grants.allows_kind(media_kind, source)


def test_viewers_exist_only_in_the_watching_kinds() -> None:
    assert {k for k, r in EXPECTED if r == "viewer"} == {"mdt", "broadcast"}


@pytest.mark.parametrize(("kind", "role", "waits"), [
    ("clinic", "patient", True),
    ("clinic", "guardian", True),
    ("clinic", "doctor", False),
    ("clinic", "host", False),
    ("clinic", "nurse", False),
    ("clinic", "interpreter", False),
    ("joint_clinic", "patient", False),
    ("mdt", "patient", True),
])
def test_lobby_flag(kind: str, role: str, waits: bool) -> None:
    assert role_policy(kind, role).waits_in_lobby is waits


def test_documents_are_signed_only_where_the_kind_writes_them() -> None:
    for kind, policy in POLICIES.items():
        signers = {r.value for r, rp in policy.roles.items() if rp.grants.sign}
        assert bool(signers) == bool(policy.documents), kind
    assert {k.value: [d.value for d in p.documents] for k, p in POLICIES.items()} == {
        "clinic": [], "joint_clinic": ["consult_opinion"], "ward_round": ["note"],
        "mdt": ["minutes", "conclusion"], "broadcast": []}
    # in an MDT only the chair signs
    assert {r.value for r, rp in POLICIES[RoomKind.MDT].roles.items() if rp.grants.sign} == {
        "host", "moderator"}


def test_only_broadcast_moderators_promote_and_cameras_only_publish() -> None:
    promoters = {(k.value, r.value) for k, p in POLICIES.items() for r, rp in p.roles.items()
                 if rp.grants.promote}
    assert promoters == {("broadcast", "host"), ("broadcast", "moderator")}
    camera = grants_for("broadcast", "camera")
    assert camera.publish_video and not camera.subscribe and not camera.send_data


def test_only_moderators_record() -> None:
    for kind, policy in POLICIES.items():
        for role, role_policy_ in policy.roles.items():
            assert role_policy_.grants.record == role_policy_.grants.moderate, (kind, role)


def test_only_patients_and_guardians_give_recording_consent() -> None:
    givers = {(k.value, r.value) for k, p in POLICIES.items() for r, rp in p.roles.items()
              if rp.gives_consent}
    assert givers == {("clinic", "patient"), ("clinic", "guardian"),
                      ("joint_clinic", "patient"), ("joint_clinic", "guardian"),
                      ("mdt", "patient")}


def test_kinds_that_record_by_themselves_once_consent_exists() -> None:
    assert {k.value for k, p in POLICIES.items() if p.auto_record} == {"broadcast"}


def test_only_patients_and_guardians_ever_wait_in_the_lobby() -> None:
    waiting = {(k.value, r.value) for k, p in POLICIES.items() for r, rp in p.roles.items()
               if rp.waits_in_lobby}
    assert waiting == {("clinic", "patient"), ("clinic", "guardian"), ("mdt", "patient")}


@pytest.mark.parametrize("kind", ["", "Clinic", "CLINIC", "surgery", "clinic ", "mdt2"])
def test_unknown_kind(kind: str) -> None:
    with pytest.raises(PolicyError) as info:
        kind_policy(kind)
    assert info.value.code == "unknown_room_kind"
    assert repr(kind) in str(info.value)
    # the message lists what is known
    for known in ALL_KINDS:
        assert known in str(info.value)
    with pytest.raises(PolicyError) as info:
        grants_for(kind, "host")
    assert info.value.code == "unknown_room_kind"


@pytest.mark.parametrize("role", ["", "janitor", "Host", "admin", "HOST"])
def test_unknown_role(role: str) -> None:
    with pytest.raises(PolicyError) as info:
        role_policy("clinic", role)
    assert info.value.code == "unknown_role"
    assert repr(role) in str(info.value)
    assert "doctor" in str(info.value)


@pytest.mark.parametrize(("kind", "role"), NOT_ALLOWED)
def test_role_not_allowed(kind: str, role: str) -> None:
    with pytest.raises(PolicyError) as info:
        grants_for(kind, role)
    assert info.value.code == "role_not_allowed"
    assert role in str(info.value) and kind in str(info.value)


def test_not_allowed_sample_is_what_we_think() -> None:
    assert ("clinic", "viewer") in NOT_ALLOWED
    assert ("clinic", "specialist") in NOT_ALLOWED
    assert ("ward_round", "patient") in NOT_ALLOWED
    assert ("broadcast", "patient") in NOT_ALLOWED
    assert ("joint_clinic", "viewer") in NOT_ALLOWED


def test_policy_error_is_a_value_error_with_a_code() -> None:
    exc = PolicyError("x_code", "message")
    assert isinstance(exc, ValueError)
    assert exc.code == "x_code"
    assert str(exc) == "message"


# ---- Grants ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("mine", "other", "within"), [
    (Grants(), Grants(), True),
    (WATCH, HOST, True),
    (AV, AV_SCREEN, True),
    (AV_SCREEN, AV, False),
    (HOST, AV_SCREEN, False),
    (HOST, HOST, True),
    (AV, WATCH, False),
    ((False,) * 9, WATCH, True),
    ((False, False, False, True, False, False, False, False, False), (False,) * 9, False),
    ((False, False, False, False, False, True, False, False, False), AV_SCREEN, False),
    ((False, False, False, False, False, False, True, False, False), AV_SCREEN, False),
    (with_(HOST, sign=True), HOST, False),
    (with_(HOST, promote=True), HOST, False),
])
def test_grants_within(mine: object, other: object, within: bool) -> None:
    def make(value: object) -> Grants:
        if isinstance(value, Grants):
            return value
        assert isinstance(value, tuple)
        names = ("publish_audio", "publish_video", "publish_screen", "subscribe", "send_data",
                 "moderate", "record", "sign", "promote")
        return Grants(**dict(zip(names, value, strict=True)))

    assert make(mine).within(make(other)) is within


def test_grants_round_trip_and_unknown_names() -> None:
    g = grants_for("mdt", "presenter")
    assert Grants.from_dict(g.as_dict()) == g
    assert Grants.from_dict({}) == Grants()
    assert Grants.from_dict({"moderate": True}).moderate
    with pytest.raises(ValueError, match="fly"):
        Grants.from_dict({"fly": True})


@pytest.mark.parametrize(("kind", "source", "attribute"), [
    ("audio", "microphone", "publish_audio"),
    ("video", "camera", "publish_video"),
    ("video", "screen", "publish_screen"),
])
def test_allows_kind_reads_the_matching_grant(kind: str, source: str, attribute: str) -> None:
    assert Grants(**{attribute: True}).allows_kind(kind, source)
    everything_else = {name: True for name in Grants.__dataclass_fields__ if name != attribute}
    assert not Grants(**everything_else).allows_kind(kind, source)
