"""Simulcast in SDP (RFC 8851 ``a=rid``, RFC 8853 ``a=simulcast``), which aiortc does not parse.

A browser that simulcasts offers, on one video m-line, ``a=rid:<id> send`` per encoding, an
``a=simulcast:send <id>;<id>;…`` list, and the ``sdes:rtp-stream-id`` header extension that
tags each encoding's packets with its rid. The answer accepts by mirroring them with ``recv``.
"""

from __future__ import annotations

import re

from media.rtp import URI_RTP_STREAM_ID


class SimulcastError(ValueError):
    """A simulcast offer the SFU cannot take; the message says why."""


_RID_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def _sections(sdp: str) -> list[str]:
    """The SDP split at each ``m=`` line: the session part first, then one part per m-line."""
    return re.split(r"\r?\n(?=m=)", sdp)


def offered_rids(sdp: str) -> dict[str, list[str]]:
    """{mid: [rid, …]} for each m-line that offers simulcast, rids in the offer's order.

    Alternatives (``a,b``) keep their first choice; paused rids (``~a``) are kept (the
    publisher may start them later). Raises SimulcastError on a list the SFU cannot use."""
    found: dict[str, list[str]] = {}
    for section in _sections(sdp)[1:]:
        lines = section.splitlines()
        attrs = [line[2:] for line in lines if line.startswith("a=")]
        mid = next((a[4:].strip() for a in attrs if a.startswith("mid:")), None)
        lists = [a[len("simulcast:"):].strip() for a in attrs if a.startswith("simulcast:")]
        if not lists:
            continue
        if mid is None:
            raise SimulcastError("a simulcast m-line needs an a=mid")
        direction, _, streams = lists[0].partition(" ")
        if direction != "send":
            raise SimulcastError(f"mid {mid!r}: only a=simulcast:send can be received, "
                                 f"got {direction!r}")
        rids = [alt.split(",")[0].lstrip("~") for alt in streams.strip().split(";") if alt]
        declared = {a[4:].split()[0] for a in attrs if a.startswith("rid:") and
                    len(a[4:].split()) > 1 and a[4:].split()[1] == "send"}
        for rid in rids:
            if not _RID_TOKEN.match(rid):
                raise SimulcastError(f"mid {mid!r}: bad rid {rid!r}")
            if rid not in declared:
                raise SimulcastError(f"mid {mid!r}: rid {rid!r} has no a=rid:{rid} send line")
        if len(set(rids)) != len(rids) or not 1 < len(rids) <= 4:
            raise SimulcastError(f"mid {mid!r}: simulcast needs 2 to 4 distinct rids, got "
                                 f"{';'.join(rids)!r}")
        if not any(a.startswith("extmap:") and URI_RTP_STREAM_ID in a for a in attrs):
            raise SimulcastError(f"mid {mid!r}: simulcast needs the {URI_RTP_STREAM_ID} "
                                 f"header extension")
        found[mid] = rids
    return found


def accept_in_answer(answer_sdp: str, rids_by_mid: dict[str, list[str]]) -> str:
    """The answer with ``a=rid:<id> recv`` and ``a=simulcast:recv …`` on those m-lines."""
    if not rids_by_mid:
        return answer_sdp
    newline = "\r\n" if "\r\n" in answer_sdp else "\n"
    out = []
    for section in _sections(answer_sdp):
        mid = next((line[6:].strip() for line in section.splitlines()
                    if line.startswith("a=mid:")), None)
        rids = rids_by_mid.get(mid or "") if section.startswith("m=") else None
        if rids:
            body = section.rstrip("\r\n")
            extra = [f"a=rid:{rid} recv" for rid in rids] + [f"a=simulcast:recv {';'.join(rids)}"]
            section = newline.join([body, *extra]) + (newline if section != body else "")
        out.append(section)
    return newline.join(out)
