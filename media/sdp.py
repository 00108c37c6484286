"""SDP checks shared by both kinds of peer connection: ``SdpError`` (an offer or answer that
cannot be used, with the reason), ``parse_sdp`` and ``is_rtx`` (an RTX codec entry)."""

from __future__ import annotations

from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.sdp import SessionDescription


class SdpError(ValueError):
    """An offer or answer that cannot be used; the message says why."""


def parse_sdp(sdp: str) -> SessionDescription:
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise SdpError("SDP must start with v=0")
    try:
        return SessionDescription.parse(sdp)
    except Exception as exc:  # aiortc raises ValueError, KeyError, IndexError… on bad SDP
        raise SdpError(f"cannot parse SDP: {exc!r}") from exc


def is_rtx(codec: RTCRtpCodecParameters) -> bool:
    return codec.mimeType.lower().endswith("/rtx")
