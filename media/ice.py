"""ICE on the configured addresses only.

* aioice gathers host candidates on every interface but loopback; we gather on exactly the
  configured addresses (``ice.gather_addresses``), so a loopback test and a multi-homed server
  both get what they are told.
* ``ice.announce_addresses`` maps a gathered address to the address put in our SDP (1:1 NAT,
  public IP of a cloud VM).
* Remote mDNS (``*.local``) candidates would be resolved by multicast; they are dropped when
  ``ice.ignore_mdns_candidates`` is on.
* STUN/TURN servers come from configuration only; none by default (aiortc's own default
  would contact a public STUN server). TURN credentials for clients are made per participant
  (``media/turn.py``, the TURN REST scheme); static ``turn_servers`` are for dev mode only.
* As the controlling agent, a pair through a TURN relay is nominated only once the direct
  pairs have had their chance (``media/nomination.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer

from media import nomination
from media.turn import TurnRest
from media.udpmux import UdpMux

log = logging.getLogger("huizhen.media.ice")

_original_get_host_addresses: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses


@dataclass
class TurnServerSpec:
    url: str
    username: str = ""
    credential: str = ""


@dataclass
class IcePolicy:
    gather_addresses: list[str] | None = None  # None = aioice's default (all but loopback)
    announce_addresses: dict[str, str] = field(default_factory=dict)
    stun_servers: list[str] = field(default_factory=list)
    turn_servers: list[TurnServerSpec] = field(default_factory=list)  # static: dev mode only
    ignore_mdns_candidates: bool = True
    #: coturn with ``use-auth-secret``: each client gets its own short-lived credentials
    turn: TurnRest | None = None
    #: ``media.udp_port``: every connection of the SFU on one shared socket (media/udpmux.py)
    udp_mux: UdpMux | None = None

    def prepare(self, pc: Any) -> None:
        """Before ``setLocalDescription`` of one of the SFU's own connections: on the shared
        UDP port when there is one."""
        if self.udp_mux is not None:
            self.udp_mux.adopt(pc)

    def install(self) -> None:
        """Make aioice gather on our addresses and prefer direct pairs to relayed ones
        (process-wide: aioice has no per-connection knob)."""
        nomination.install()
        if self.gather_addresses is None:
            setattr(aioice.ice, "get_host_addresses", _original_get_host_addresses)  # noqa: B010
            return
        addresses = list(self.gather_addresses)

        def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            return [a for a in addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

        setattr(aioice.ice, "get_host_addresses", get_host_addresses)  # noqa: B010
        log.info("ice gathering on configured addresses", extra={"addresses": addresses})

    def configuration(self) -> RTCConfiguration:
        servers = [RTCIceServer(urls=url) for url in self.stun_servers[:1]]
        servers += [
            RTCIceServer(urls=t.url, username=t.username or None, credential=t.credential or None)
            for t in self.turn_servers[:1]
        ]
        return RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)

    def client_ice_servers(self, user: str = "", expires_at: int | None = None
                           ) -> list[dict[str, Any]]:
        """The servers handed to browsers (``joined.ice_servers``, ``GET /precheck``). With
        ``user`` and ``expires_at`` (a participant and its token's expiry), the REST-scheme
        TURN servers come with credentials of their own for that user, valid until then."""
        out: list[dict[str, Any]] = [{"urls": [url]} for url in self.stun_servers]
        if self.turn is not None and self.turn.urls and user and expires_at is not None:
            out.append(self.turn.credentials(user, expires_at))
        for t in self.turn_servers:
            entry: dict[str, Any] = {"urls": [t.url]}
            if t.username:
                entry["username"] = t.username
                entry["credential"] = t.credential
            out.append(entry)
        return out

    def clean_remote_sdp(self, sdp: str) -> str:
        """Drop remote mDNS candidates (they would be resolved by multicast)."""
        if not self.ignore_mdns_candidates:
            return sdp
        return _filter_lines(sdp, lambda line: not _is_mdns_candidate(line))

    def rewrite_local_sdp(self, sdp: str) -> str:
        """Replace gathered addresses with announced ones in our candidates."""
        if not self.announce_addresses:
            return sdp
        out = []
        for line in sdp.splitlines():
            if line.startswith("a=candidate:"):
                parts = line.split(" ")
                if len(parts) > 4 and parts[4] in self.announce_addresses:
                    parts[4] = self.announce_addresses[parts[4]]
                    line = " ".join(parts)
            elif line.startswith("c=IN "):
                parts = line.split(" ")
                if len(parts) == 3 and parts[2] in self.announce_addresses:
                    parts[2] = self.announce_addresses[parts[2]]
                    line = " ".join(parts)
            out.append(line)
        return "\r\n".join(out) + "\r\n"


def _is_mdns_candidate(line: str) -> bool:
    if not line.startswith("a=candidate:"):
        return False
    parts = line.split(" ")
    return len(parts) > 4 and parts[4].endswith(".local")


def _filter_lines(sdp: str, keep: Callable[[str], bool]) -> str:
    lines: Sequence[str] = [line for line in sdp.splitlines() if keep(line)]
    return "\r\n".join(lines) + "\r\n"
