"""JWTs: API callers (hospital systems, the CLI) and participants.

Both are HS256 tokens signed with an API key's secret and naming the key in ``iss``.
Verification pins the algorithm and checks signature, expiry, not-before and audience; every
failure maps to its own error code (see docs/protocol.md).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from records.access import ADMIN, PATIENT_ROLES, Viewer
from rooms.policy import Grants, PolicyError, Role, grants_for

#: who may hold a records token: admins, patients and guardians, and every room role (those
#: outside the care team get a token that opens nothing: records/access.py says why)
RECORD_ROLES = frozenset({ADMIN, *PATIENT_ROLES, *(r.value for r in Role)})

ALGORITHM = "HS256"
API_AUDIENCE_SUFFIX = ":api"
RECORDS_AUDIENCE_SUFFIX = ":records"
#: a records token (the Records page, a patient-portal link) lives at most this long
MAX_RECORDS_TOKEN_TTL_S = 12 * 3600
#: an API token may live at most this long (they are minted per call or per batch)
MAX_API_TOKEN_TTL_S = 3600
LEEWAY_S = 5


class AuthError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ParticipantClaims:
    api_key: str
    identity: str
    room: str
    name: str
    role: str
    grants: Grants
    expires_at: int
    token_id: str
    #: an invite: the first device to use it owns it (signaling/ws.py)
    single_use: bool = False
    #: the participant's department (the ``department`` claim), for attendance lists
    department: str | None = None


SecretLookup = Callable[[str], str | None]


def _now() -> int:
    return int(time.time())


def mint_participant_token(
    *,
    api_key: str,
    secret: str,
    audience: str,
    room_id: str,
    room_kind: str,
    identity: str,
    name: str,
    role: str,
    ttl_s: int,
    grants: Grants | None = None,
    single_use: bool = False,
    department: str | None = None,
) -> tuple[str, ParticipantClaims]:
    """Sign a participant token; grants default to the role's grants in the room's kind."""
    allowed = grants_for(room_kind, role)  # raises PolicyError for a role the kind refuses
    if grants is None:
        grants = allowed
    elif not grants.within(allowed):
        raise PolicyError("grants_exceed_role", f"the grants exceed what {role!r} may do")
    now = _now()
    claims = ParticipantClaims(
        api_key=api_key,
        identity=identity,
        room=room_id,
        name=name,
        role=role,
        grants=grants,
        expires_at=now + ttl_s,
        token_id=uuid.uuid4().hex,
        single_use=single_use,
        department=department,
    )
    payload: dict[str, Any] = {
        "iss": api_key,
        "sub": identity,
        "aud": audience,
        "room": room_id,
        "name": name,
        "role": role,
        "grants": grants.as_dict(),
        "iat": now,
        "nbf": now - LEEWAY_S,
        "exp": claims.expires_at,
        "jti": claims.token_id,
    }
    if single_use:
        payload["single_use"] = True
    if department:
        payload["department"] = department
    return jwt.encode(payload, secret, algorithm=ALGORITHM), claims


def mint_api_token(api_key: str, secret: str, audience: str, ttl_s: int = 300) -> str:
    """A short-lived token for calling the REST API (``Authorization: Bearer …``)."""
    now = _now()
    payload = {"iss": api_key, "aud": audience + API_AUDIENCE_SUFFIX, "iat": now,
               "nbf": now - LEEWAY_S, "exp": now + min(ttl_s, MAX_API_TOKEN_TTL_S)}
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def mint_records_token(api_key: str, secret: str, audience: str, identity: str, role: str,
                       patient_ref: str | None, ttl_s: int) -> tuple[str, int]:
    """A token for the Records page and its API: a clinician's or admin's (``identity``,
    ``role``), or a patient's or guardian's for ``patient_ref``'s own record."""
    if role not in RECORD_ROLES:
        raise AuthError("token_role", f"role {role!r}: one of {', '.join(sorted(RECORD_ROLES))}")
    if (role in PATIENT_ROLES) != bool(patient_ref):
        raise AuthError("token_claims", "a patient's or guardian's token names their patient "
                        "(patient_ref); other roles' do not")
    now = _now()
    expires = now + max(1, min(ttl_s, MAX_RECORDS_TOKEN_TTL_S))
    payload: dict[str, Any] = {"iss": api_key, "sub": identity, "role": role,
                               "aud": audience + RECORDS_AUDIENCE_SUFFIX, "iat": now,
                               "nbf": now - LEEWAY_S, "exp": expires, "jti": uuid.uuid4().hex}
    if patient_ref:
        payload["patient"] = patient_ref
    return jwt.encode(payload, secret, algorithm=ALGORITHM), expires


def verify_records_token(token: str, secrets: SecretLookup, audience: str) -> Viewer:
    _, claims = _decode(token, secrets, audience + RECORDS_AUDIENCE_SUFFIX)
    try:
        role = _text(claims, "role")
        patient = claims.get("patient")
        if role not in RECORD_ROLES or (role in PATIENT_ROLES) != isinstance(patient, str):
            raise ValueError(f"role {role!r} with patient {patient!r}")
        return Viewer(identity=_text(claims, "sub"), role=role,
                      patient_ref=patient if isinstance(patient, str) else None)
    except (KeyError, TypeError, ValueError) as exc:
        raise AuthError("token_claims", f"the token's claims are incomplete: {exc}") from exc


def _decode(token: str, secrets: SecretLookup, audience: str) -> tuple[str, dict[str, Any]]:
    """Verify a token; return (api key, claims) or raise AuthError with a precise code."""
    if not token:
        raise AuthError("token_missing", "no token was given")
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.DecodeError as exc:
        raise AuthError("token_malformed", f"the token is not a valid JWT: {exc}") from exc
    if header.get("alg") != ALGORITHM:
        raise AuthError("token_algorithm",
                        f"token algorithm {header.get('alg')!r} refused; only {ALGORITHM}")
    key = unverified.get("iss")
    secret = secrets(key) if isinstance(key, str) else None
    if secret is None or not isinstance(key, str):
        raise AuthError("token_unknown_key", f"the token names an unknown API key ({key!r})")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=audience,
            leeway=LEEWAY_S,
            options={"require": ["exp", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthError("token_expired", "the token has expired; ask for a new link") from exc
    except jwt.ImmatureSignatureError as exc:
        raise AuthError("token_not_yet_valid", "the token is not valid yet") from exc
    except jwt.InvalidAudienceError as exc:
        raise AuthError("token_audience", "the token is meant for another service") from exc
    except jwt.InvalidSignatureError as exc:
        raise AuthError("token_signature", "the token signature does not verify") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError("token_claims", str(exc)) from exc
    except jwt.InvalidTokenError as exc:
        raise AuthError("token_claims", f"the token is invalid: {exc}") from exc
    return key, claims


def verify_api_token(token: str, secrets: SecretLookup, audience: str) -> str:
    """Verify a REST caller's token; return the API key it was signed with."""
    key, _ = _decode(token, secrets, audience + API_AUDIENCE_SUFFIX)
    return key


def verify_participant_token(
    token: str, secrets: SecretLookup, audience: str
) -> ParticipantClaims:
    key, claims = _decode(token, secrets, audience)
    try:
        grants = Grants.from_dict(claims["grants"])
        parsed = ParticipantClaims(
            api_key=key,
            identity=_text(claims, "sub"),
            room=_text(claims, "room"),
            name=_text(claims, "name"),
            role=_text(claims, "role"),
            grants=grants,
            expires_at=int(claims["exp"]),
            token_id=str(claims.get("jti") or ""),
            single_use=claims.get("single_use") is True,
            department=_optional_text(claims, "department"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise AuthError("token_claims", f"the token's claims are incomplete: {exc}") from exc
    return parsed


def _text(claims: dict[str, Any], name: str) -> str:
    value = claims[name]
    if not isinstance(value, str) or not value:
        raise ValueError(f"claim {name!r} must be a non-empty string")
    return value


def _optional_text(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"claim {name!r} must be a non-empty string when present")
    return value


def check_role_for_room(claims: ParticipantClaims, room_kind: str) -> Grants:
    """The grants the participant really gets: the token's, bounded by the role's in this kind."""
    try:
        allowed = grants_for(room_kind, claims.role)
    except PolicyError as exc:
        raise AuthError("token_role", str(exc)) from exc
    if not claims.grants.within(allowed):
        raise AuthError("token_role", f"the token grants more than {claims.role!r} may have")
    return claims.grants
