"""Short-lived TURN credentials by the TURN REST scheme (coturn ``use-auth-secret``).

The service and coturn share one secret (coturn's ``static-auth-secret``). Each participant
gets its own username ``<expiry unix time>:<participant id>`` and the credential
``base64(HMAC-SHA1(secret, username))``; coturn recomputes the credential from the username and
refuses it once the expiry has passed (every TURN request is checked, allocation refreshes
included). No static TURN password ever reaches a client. See docs/turn.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any


def turn_credential(secret: str, username: str) -> str:
    """coturn's long-term credential for a REST-scheme ``username``."""
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass
class TurnRest:
    """The TURN servers clients are handed, and the secret that signs their credentials."""

    secret: str
    urls: list[str] = field(default_factory=list)
    #: a credential never lives longer than this, even with a longer-lived token
    max_ttl_s: int = 12 * 3600

    def credentials(self, user: str, expires_at: int, now: float | None = None
                    ) -> dict[str, Any]:
        """One RTCIceServer entry (all the URLs) for ``user`` until ``expires_at`` (the
        token's expiry; capped at ``max_ttl_s`` from now)."""
        if ":" in user:
            raise ValueError("a TURN REST user name part must not contain ':'")
        start = int(time.time() if now is None else now)
        expiry = min(int(expires_at), start + self.max_ttl_s)
        username = f"{expiry}:{user}"
        return {"urls": list(self.urls), "username": username,
                "credential": turn_credential(self.secret, username)}
