"""The aiortc/aioice internals media/ relies on are still where we expect them.

aiortc is pinned to 1.16.*; when it is upgraded, this test says precisely which hook moved
(the end-to-end media tests would fail too, less clearly).
"""

from __future__ import annotations

import aioice.ice
import aiortc
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcicetransport import RTCIceTransport


def test_pinned_minor_version() -> None:
    assert aiortc.__version__.startswith("1.16."), aiortc.__version__


async def test_receiver_and_sender_hooks_exist() -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no default STUN server
    transceiver = pc.addTransceiver("video", direction="sendrecv")
    receiver, sender = transceiver.receiver, transceiver.sender
    assert hasattr(receiver, "_RTCRtpReceiver__jitter_buffer")
    for name in ("_handle_rtp_packet", "_handle_rtcp_packet", "_send_rtcp_pli",
                 "_send_rtcp_nack"):
        assert callable(getattr(RTCRtpReceiver, name)), name
    for name in ("send", "stop", "_handle_rtcp_packet"):
        assert callable(getattr(RTCRtpSender, name)), name
    for name in ("_ssrc", "_stream_id", "_track_id"):
        assert hasattr(sender, name), name
    assert isinstance(transceiver._codecs, list)
    dtls = sender.transport
    assert isinstance(dtls, RTCDtlsTransport)
    assert hasattr(dtls, "_tx_srtp") and callable(dtls._register_rtp_sender)
    # bench/ times packets where they leave the publisher and reach a subscriber
    assert callable(dtls._send_rtp) and callable(dtls._handle_rtp_data)
    assert callable(dtls._unregister_rtp_sender)
    ice = dtls.transport
    assert isinstance(ice, RTCIceTransport)
    assert hasattr(ice._connection, "_nominated")
    await pc.close()


def test_aioice_host_address_function_exists() -> None:
    assert callable(aioice.ice.get_host_addresses)
    assert aioice.ice.StunProtocol is not None
