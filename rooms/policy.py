"""Room kinds, roles and what each role may do in each kind: one table, read by everything.

The table is the single source of truth for permissions. A participant token carries the grants
computed from it when the token is issued; the server re-derives them from the table when the
participant joins (so a token cannot grant more than its role allows in the room's kind).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from enum import StrEnum


class RoomKind(StrEnum):
    CLINIC = "clinic"
    JOINT_CLINIC = "joint_clinic"
    WARD_ROUND = "ward_round"
    MDT = "mdt"
    BROADCAST = "broadcast"


class Role(StrEnum):
    HOST = "host"
    DOCTOR = "doctor"
    SPECIALIST = "specialist"
    NURSE = "nurse"
    INTERPRETER = "interpreter"
    PATIENT = "patient"
    GUARDIAN = "guardian"
    PRESENTER = "presenter"
    MODERATOR = "moderator"
    VIEWER = "viewer"
    #: an extra operating-room camera: a device that only publishes (broadcast)
    CAMERA = "camera"


class DocumentKind(StrEnum):
    """The clinical documents a room leaves in the patient's record (records/documents.py)."""

    CONSULT_OPINION = "consult_opinion"  # joint clinic: the remote specialist's opinion
    NOTE = "note"  # ward round: notes on the patient under discussion
    MINUTES = "minutes"  # MDT: the minutes of one case
    CONCLUSION = "conclusion"  # MDT: the conclusion of one case, signed by the chair


#: the care team: the roles whose holders may open the record of an encounter they took part
#: in (records/access.py); patients and guardians see their own record, viewers and
#: interpreters none
CARE_TEAM = frozenset({Role.HOST, Role.DOCTOR, Role.SPECIALIST, Role.NURSE, Role.PRESENTER,
                       Role.MODERATOR})
#: the patient's side: their names never leave the room in lists (attendance)
PATIENT_SIDE = frozenset({Role.PATIENT, Role.GUARDIAN})


@dataclass(frozen=True)
class Grants:
    publish_audio: bool = False
    publish_video: bool = False
    publish_screen: bool = False
    subscribe: bool = True
    send_data: bool = False
    moderate: bool = False
    #: start, stop and pause the recording (moderators); with consent, or an override reason
    record: bool = False
    #: write and sign the room's clinical documents (the kinds in ``KindPolicy.documents``)
    sign: bool = False
    #: let a viewer speak (and take the floor back): broadcast moderators
    promote: bool = False

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> Grants:
        """Parse grants from a token claim: an object of booleans; ValueError otherwise."""
        if not isinstance(data, dict):
            raise ValueError("grants must be an object of booleans")
        names = set(cls.__dataclass_fields__)
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown grant(s): {', '.join(sorted(map(str, unknown)))}")
        for key, value in data.items():
            if not isinstance(value, bool):
                raise ValueError(f"grant {key!r} must be true or false, not {value!r}")
        return cls(**data)

    def within(self, other: Grants) -> bool:
        """True when every grant here is also granted by ``other``."""
        return all(not mine or other_v for mine, other_v in zip(self.as_dict().values(),
                                                                 other.as_dict().values(),
                                                                 strict=True))

    def allows_kind(self, kind: str, source: str) -> bool:
        """May this participant publish a track of ``kind`` (audio/video) from ``source``?"""
        if source == "screen":
            return self.publish_screen
        if kind == "audio":
            return self.publish_audio
        return self.publish_video


# shorthands for the table
_AV = Grants(publish_audio=True, publish_video=True, send_data=True)
_AV_SCREEN = Grants(publish_audio=True, publish_video=True, publish_screen=True, send_data=True)
_HOST = Grants(publish_audio=True, publish_video=True, publish_screen=True, send_data=True,
               moderate=True, record=True)
_WATCH = Grants(send_data=True)
_CAMERA = Grants(publish_audio=True, publish_video=True, subscribe=False)


def _with(grants: Grants, **more: bool) -> Grants:
    return replace(grants, **more)


@dataclass(frozen=True)
class RolePolicy:
    grants: Grants
    #: joins the lobby and waits to be admitted by a moderator (clinic patients)
    waits_in_lobby: bool = False
    #: may give or refuse the recording consent in the client (the patient, or a guardian
    #: for a child or an elderly patient)
    gives_consent: bool = False
    #: the audience (broadcast viewers): in nobody's roster; nobody is told when one joins or
    #: leaves, and they get no roster of the other quiet members; those who see the audience
    #: get a viewer count instead. May raise a hand (a moderator with ``promote`` lets them
    #: speak: then they are in the roster until demoted) and ask questions (rooms/broadcast.py)
    quiet: bool = False


@dataclass(frozen=True)
class KindPolicy:
    kind: RoomKind
    roles: dict[Role, RolePolicy]
    max_participants: int
    #: the role a moderator holds when a room is created by a hospital system
    host_role: Role = Role.HOST
    #: publishers send camera video as simulcast layers, so that each of many viewers gets
    #: the layer its link and screen can take (not for small calls: it costs the publisher's
    #: uplink, often a patient's weak 4G)
    simulcast: bool = False
    #: recording starts by itself once the patient's recording consent is recorded (a room
    #: can say otherwise when it is created)
    auto_record: bool = False
    #: one session discusses several patients in turn: a moderator names the patient under
    #: discussion (rooms/subjects.py), which cuts the recording and the record into segments
    several_patients: bool = False
    #: the clinical documents this kind of room writes (who may: the ``sign`` grant)
    documents: tuple[DocumentKind, ...] = ()
    #: the roles whose holders, having attended, may play the room's own recording afterwards
    #: (teaching broadcast: the trainees; records/access.py); nothing else of the record
    replay_for: tuple[Role, ...] = ()


POLICIES: dict[RoomKind, KindPolicy] = {
    RoomKind.CLINIC: KindPolicy(
        RoomKind.CLINIC,
        {
            Role.HOST: RolePolicy(_HOST),
            Role.DOCTOR: RolePolicy(_HOST),
            Role.NURSE: RolePolicy(_AV),
            Role.INTERPRETER: RolePolicy(_AV),
            Role.PATIENT: RolePolicy(_AV, waits_in_lobby=True, gives_consent=True),
            Role.GUARDIAN: RolePolicy(_AV, waits_in_lobby=True, gives_consent=True),
        },
        max_participants=6,
    ),
    RoomKind.JOINT_CLINIC: KindPolicy(
        RoomKind.JOINT_CLINIC,
        {
            Role.HOST: RolePolicy(_with(_HOST, sign=True)),
            Role.DOCTOR: RolePolicy(_with(_HOST, sign=True)),
            Role.SPECIALIST: RolePolicy(_with(_AV_SCREEN, sign=True)),
            Role.NURSE: RolePolicy(_AV),
            Role.INTERPRETER: RolePolicy(_AV),
            Role.PATIENT: RolePolicy(_AV, gives_consent=True),
            Role.GUARDIAN: RolePolicy(_AV, gives_consent=True),
        },
        max_participants=8,
        documents=(DocumentKind.CONSULT_OPINION,),
    ),
    RoomKind.WARD_ROUND: KindPolicy(
        RoomKind.WARD_ROUND,
        {
            Role.HOST: RolePolicy(_with(_HOST, sign=True)),
            Role.DOCTOR: RolePolicy(_with(_AV_SCREEN, sign=True)),
            Role.SPECIALIST: RolePolicy(_with(_AV_SCREEN, sign=True)),
            Role.NURSE: RolePolicy(_AV),
        },
        max_participants=12,
        several_patients=True,
        documents=(DocumentKind.NOTE,),
    ),
    RoomKind.MDT: KindPolicy(
        RoomKind.MDT,
        {
            # the chair (host or moderator) writes the minutes and signs the conclusion
            Role.HOST: RolePolicy(_with(_HOST, sign=True)),
            Role.MODERATOR: RolePolicy(_with(_HOST, sign=True)),
            Role.PRESENTER: RolePolicy(_AV_SCREEN),
            Role.SPECIALIST: RolePolicy(_AV_SCREEN),
            Role.DOCTOR: RolePolicy(_AV_SCREEN),
            Role.PATIENT: RolePolicy(_AV, waits_in_lobby=True, gives_consent=True),
            Role.VIEWER: RolePolicy(_WATCH),
        },
        max_participants=24,
        simulcast=True,
        several_patients=True,
        documents=(DocumentKind.MINUTES, DocumentKind.CONCLUSION),
    ),
    RoomKind.BROADCAST: KindPolicy(
        RoomKind.BROADCAST,
        {
            Role.HOST: RolePolicy(_with(_HOST, promote=True)),
            Role.MODERATOR: RolePolicy(_with(_HOST, promote=True)),
            Role.PRESENTER: RolePolicy(_AV_SCREEN),
            Role.CAMERA: RolePolicy(_CAMERA),
            Role.VIEWER: RolePolicy(_WATCH, quiet=True),
        },
        max_participants=1000,
        simulcast=True,
        # a teaching broadcast is recorded for on-demand viewing once the operated patient's
        # consent is entered (through the API, before the broadcast)
        auto_record=True,
        # trainees who attended watch the recording on demand (for CME credit)
        replay_for=(Role.VIEWER,),
    ),
}


class PolicyError(ValueError):
    """A kind/role combination the table does not allow; ``code`` is the API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def kind_policy(kind: str) -> KindPolicy:
    try:
        return POLICIES[RoomKind(kind)]
    except ValueError as exc:
        known = ", ".join(k.value for k in RoomKind)
        raise PolicyError("unknown_room_kind", f"unknown room kind {kind!r}; one of: {known}") \
            from exc


def role_policy(kind: str, role: str) -> RolePolicy:
    policy = kind_policy(kind)
    try:
        role_enum = Role(role)
    except ValueError as exc:
        known = ", ".join(r.value for r in policy.roles)
        raise PolicyError("unknown_role", f"unknown role {role!r}; in a {kind} room: {known}") \
            from exc
    if role_enum not in policy.roles:
        known = ", ".join(r.value for r in policy.roles)
        raise PolicyError(
            "role_not_allowed", f"role {role!r} cannot join a {kind} room; allowed: {known}"
        )
    return policy.roles[role_enum]


def grants_for(kind: str, role: str) -> Grants:
    return role_policy(kind, role).grants
