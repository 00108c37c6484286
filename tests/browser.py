"""Debian chromium driven by Playwright, set up for WebRTC over loopback (see
shared notes: webrtc-on-this-machine.md)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import playwright
from playwright.async_api import Browser, Page, Playwright

CHROMIUM = "/usr/bin/chromium"

# Chromium keeps only the last --disable-features switch, and Playwright passes its own list:
# ours must repeat Playwright's (read from the installed Playwright, with a fallback).
_PLAYWRIGHT_FALLBACK = [
    "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding",
    "ThirdPartyStoragePartitioning", "AvoidCorsURLLoaderRestartOnRedirect",
    "TcpPortRandomizationWin", "OptimizationHints", "NetworkTimeServiceQuerying", "AimEnabled",
    "PreconnectToSearch",
]


def playwright_disabled_features() -> list[str]:
    bundle = Path(playwright.__file__).parent / "driver/package/lib/coreBundle.js"
    try:
        text = bundle.read_text(encoding="utf-8")
    except OSError:
        return _PLAYWRIGHT_FALLBACK
    match = re.search(r"disabledFeatures = \[(.*?)\]\.filter", text, re.S)
    if not match:
        return _PLAYWRIGHT_FALLBACK
    return re.findall(r'"([A-Za-z0-9_]+)"', re.sub(r"//[^\n]*", "", match.group(1)))


def chromium_args() -> list[str]:
    features = [*playwright_disabled_features(), "WebRtcHideLocalIpsWithMdns"]
    return [
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        "--allow-loopback-in-peer-connection",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
        "--disable-features=" + ",".join(dict.fromkeys(features)),
    ]


async def launch(pw: Playwright) -> Browser:
    return await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=chromium_args())


# Keeps every RTCPeerConnection the page makes, for getStats().
KEEP_PCS = """
(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = function (...args) {
    const pc = new Native(...args);
    window.__pcs.push(pc);
    return pc;
  };
  window.RTCPeerConnection.prototype = Native.prototype;
  Object.setPrototypeOf(window.RTCPeerConnection, Native);
})();
"""

INBOUND = """
async () => {
  const out = [];
  for (const pc of window.__pcs || []) {
    if (pc.connectionState === 'closed') continue;
    const stats = await pc.getStats();
    stats.forEach(s => {
      if (s.type === 'inbound-rtp') out.push({kind: s.kind, ssrc: s.ssrc,
        framesDecoded: s.framesDecoded || 0, packetsReceived: s.packetsReceived || 0,
        bytesReceived: s.bytesReceived || 0, totalSamplesReceived: s.totalSamplesReceived || 0,
        audioLevel: s.audioLevel || 0});
    });
  }
  return out;
}
"""


async def inbound(page: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await page.evaluate(INBOUND)
    return result


async def frames_decoded(page: Page) -> int:
    return sum(s["framesDecoded"] for s in await inbound(page) if s["kind"] == "video")


async def audio_samples(page: Page) -> int:
    return sum(s["totalSamplesReceived"] for s in await inbound(page) if s["kind"] == "audio")
