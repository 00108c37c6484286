"""The aiortc/aioice internals media/ relies on are still where we expect them.

aiortc is pinned to 1.16.*; when it is upgraded, this test says precisely which hook moved
(the end-to-end media tests would fail too, less clearly).
"""

from __future__ import annotations

import asyncio
import os

import aioice.ice
import aiortc
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from pylibsrtp import Policy, Session

from media import _fastpath as fastpath
from media import rtp
from media.rtp import URI_RTP_STREAM_ID
from media.sendpath import _SRTP_PROTECT, srtp_context


def test_pinned_minor_version() -> None:
    assert aiortc.__version__.startswith("1.16."), aiortc.__version__


async def test_receiver_and_sender_hooks_exist() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no default STUN server
    transceiver = pc.addTransceiver("video", direction="sendrecv")
    receiver, sender = transceiver.receiver, transceiver.sender
    assert hasattr(receiver, "_RTCRtpReceiver__jitter_buffer")
    # simulcast: the NACK generator is switched off (None is a state aiortc checks for)
    assert receiver._RTCRtpReceiver__nack_generator is not None
    # monitoring reads the uplink's loss from the receiver's RTCP statistics (media/stats.py)
    assert receiver._RTCRtpReceiver__remote_streams == {}
    from aiortc.rtcrtpreceiver import StreamStatistics
    from aiortc.rtp import RtpPacket
    stream = StreamStatistics(90000)
    for seq in (10, 12):
        stream.add(RtpPacket(sequence_number=seq))
    assert (stream.packets_expected, stream.packets_lost, stream.packets_received) == (3, 1, 2)
    for name in ("_handle_rtp_packet", "_handle_rtcp_packet", "_send_rtcp_pli",
                 "_send_rtcp_nack"):
        assert callable(getattr(RTCRtpReceiver, name)), name
    for name in ("send", "stop", "_handle_rtcp_packet"):
        assert callable(getattr(RTCRtpSender, name)), name
    for name in ("_ssrc", "_rtx_ssrc", "_stream_id", "_track_id"):
        assert hasattr(sender, name), name
    assert isinstance(transceiver._codecs, list)
    assert isinstance(transceiver._headerExtensions, list)  # simulcast adds rtp-stream-id
    dtls = sender.transport
    assert isinstance(dtls, RTCDtlsTransport)
    assert hasattr(dtls, "_tx_srtp") and callable(dtls._register_rtp_sender)
    # bench/ times packets where they leave the publisher and reach a subscriber
    assert callable(dtls._send_rtp) and callable(dtls._handle_rtp_data)
    assert callable(dtls._unregister_rtp_sender)
    ice = dtls.transport
    assert isinstance(ice, RTCIceTransport)
    assert hasattr(ice._connection, "_nominated")
    # media/rxstamps.py re-reads the sockets of the ICE connection's candidates
    assert isinstance(ice._connection._protocols, list)
    assert callable(asyncio.get_running_loop()._add_reader)
    await pc.close()


def test_header_extension_map_parses_rtp_stream_id() -> None:
    ext_map = HeaderExtensionsMap()
    ext_map.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=10, uri=URI_RTP_STREAM_ID)]))
    packet = RtpPacket(payload_type=96, sequence_number=1, timestamp=0, ssrc=5)
    packet.extensions.rtp_stream_id = "h"
    parsed = RtpPacket.parse(packet.serialize(ext_map), ext_map)
    assert parsed.extensions.rtp_stream_id == "h"


def test_aioice_host_address_function_exists() -> None:
    assert callable(aioice.ice.get_host_addresses)
    assert aioice.ice.StunProtocol is not None


@pytest.mark.parametrize("profile", [Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
                                     Policy.SRTP_PROFILE_AEAD_AES_256_GCM])
def test_fast_srtp_protect_matches_pylibsrtp(profile: int) -> None:
    """media.sendpath stamps and protects packets in C (media/_fastpath) with libsrtp's
    srtp_protect from pylibsrtp's binding, on pylibsrtp's session: byte for byte what the
    session's own protect gives, for a stamped template and for a whole packet."""
    key = os.urandom(44 if profile == Policy.SRTP_PROFILE_AEAD_AES_256_GCM else 30)
    reference = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
    session = Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
    context = srtp_context(session)
    batch = bytearray(4096)
    cbatch = fastpath.ffi.from_buffer(batch)
    for seq in range(3):
        block = rtp.build_packet(rtp.build_extension_block(rtp.ExtensionIds(0, 3), None, 77),
                                 os.urandom(1000))
        packet = rtp.stamp(block, 0x80 | 96, seq, 1234 + seq, 0xDEADBEEF)
        size = fastpath.lib.hz_stamp_protect(_SRTP_PROTECT, context, cbatch, 100, len(batch),
                                             block.tail, len(block.tail), block.first_byte,
                                             0x80 | 96, seq, 1234 + seq, 0xDEADBEEF)
        assert bytes(batch[100:100 + size]) == reference.protect(packet)
    whole = bytes([0x80, 96, 0, 3]) + bytes(8) + os.urandom(500)
    size = fastpath.lib.hz_protect(_SRTP_PROTECT, context, cbatch, 0, len(batch), whole,
                                   len(whole))
    assert bytes(batch[:size]) == reference.protect(whole)
    # what does not fit is refused, not written past the batch
    assert fastpath.lib.hz_protect(_SRTP_PROTECT, context, cbatch, 4000, len(batch), whole,
                                   len(whole)) == -1
    assert session.protect_rtcp(bytes([0x80, 200, 0, 1]) + bytes(4))  # the session still works
