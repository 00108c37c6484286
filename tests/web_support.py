"""Helpers for the browser-client tests (tests/test_web_client.py): pages, joining, stats."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, FloatRect, Page, ViewportSize

from tests.browser import KEEP_PCS, inbound
from tests.harness import HospitalSystem

PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"

# Keeps every WebSocket the page opens, so that a test can cut the signalling connection.
KEEP_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = function (...args) {
    const ws = new Native(...args);
    window.__sockets.push(ws);
    return ws;
  };
  window.WebSocket.prototype = Native.prototype;
  for (const k of ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED']) window.WebSocket[k] = Native[k];
})();
"""

# Pretend the server says the room is being recorded (joined.room.recording: true, with the
# matching recording_state), and let a test hand the page a server message of its own
# (window.__serverSays(msg)).
FAKE_SERVER = """
(() => {
  const desc = Object.getOwnPropertyDescriptor(WebSocket.prototype, 'onmessage');
  Object.defineProperty(WebSocket.prototype, 'onmessage', {
    configurable: true,
    get() { return desc.get.call(this); },
    set(fn) {
      const ws = this;
      ws.__handler = fn;
      desc.set.call(ws, fn && ((ev) => {
        let data = ev.data;
        try {
          const m = JSON.parse(data);
          if (m.type === 'joined' && m.room) {
            m.room.recording = true;
            m.room.recording_state = { ...(m.room.recording_state || {}), state: 'recording',
                                       consent: 'granted', override: false };
            data = JSON.stringify(m);
          }
        } catch (e) { /* not JSON: as is */ }
        fn.call(ws, { data });
      }));
    },
  });
  window.__serverSays = (msg) => {
    const ws = (window.__sockets || []).filter((s) => s.readyState === 1).at(-1);
    if (ws && ws.__handler) ws.__handler.call(ws, { data: JSON.stringify(msg) });
    return !!ws;
  };
})();
"""

# A participant who talks without pause: the microphone track is a steady tone (about
# -14 dBov). Chromium's fake microphone only beeps (300 ms of a fading tone every 500 ms),
# which is not speech to the server's speaker detection most of the time.
TALKING = """
(() => {
  const md = navigator.mediaDevices;
  const native = md.getUserMedia.bind(md);
  md.getUserMedia = async (constraints) => {
    const stream = await native(constraints);
    if (!constraints || !constraints.audio) return stream;
    const ctx = new AudioContext();
    const voice = ctx.createOscillator();
    voice.frequency.value = 180;
    const gain = ctx.createGain();
    gain.gain.value = 0.3;
    const out = ctx.createMediaStreamDestination();
    voice.connect(gain).connect(out);
    voice.start();
    for (const t of stream.getAudioTracks()) { stream.removeTrack(t); t.stop(); }
    stream.addTrack(out.stream.getAudioTracks()[0]);
    return stream;
  };
})();
"""

# Cut the live signalling socket(s) as a network drop would (no leave, no clean goodbye).
CUT_SOCKETS = """
() => {
  let n = 0;
  for (const ws of window.__sockets || []) {
    if (ws.readyState === 1) { ws.close(4000, 'test: network cut'); n++; }
  }
  return n;
}
"""

# Frames decoded by the video receivers of the current subscribe connection only.
SUB_VIDEO = """
async () => {
  const pc = window.huizhen && window.huizhen.pcs.subscribe;
  if (!pc || pc.connectionState === 'closed') return [];
  const out = [];
  (await pc.getStats()).forEach(s => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') out.push(s.framesDecoded || 0);
  });
  return out;
}
"""


# What a page's connections carry: their states and the RTP bytes sent and received so far.
MEDIA_BYTES = """
async () => {
  const pcs = window.huizhen.pcs;
  const out = {publish: pcs.publish ? pcs.publish.connectionState : null,
               subscribe: pcs.subscribe ? pcs.subscribe.connectionState : null,
               sent: 0, received: 0};
  for (const pc of [pcs.publish, pcs.subscribe]) {
    if (!pc) continue;
    (await pc.getStats()).forEach(s => {
      if (s.type === 'outbound-rtp') out.sent += s.bytesSent || 0;
      if (s.type === 'inbound-rtp') out.received += s.bytesReceived || 0;
    });
  }
  return out;
}
"""


async def media_bytes(client: Client) -> dict[str, Any]:
    result: dict[str, Any] = await client.page.evaluate(MEDIA_BYTES)
    return result


@dataclass
class Client:
    """One browser context + page, with its console kept for failure messages."""

    context: BrowserContext
    page: Page
    name: str
    console: list[str] = field(default_factory=list)

    def log(self, n: int = 25) -> str:
        return f"--- {self.name} console ---\n" + "\n".join(self.console[-n:])

    async def js(self, expr: str) -> Any:
        return await self.page.evaluate(expr)

    async def close(self) -> None:
        await self.context.close()


async def open_client(browser: Browser, name: str, viewport: ViewportSize | None = None,
                      init_scripts: list[str] | None = None, locale: str = "en-US") -> Client:
    context = await browser.new_context(viewport=viewport or PHONE, locale=locale)
    for script in [KEEP_PCS, KEEP_SOCKETS, *(init_scripts or [])]:
        await context.add_init_script(script)
    page = await context.new_page()
    client = Client(context, page, name)
    page.on("console", lambda m: client.console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: client.console.append(f"PAGE ERROR: {e}"))
    return client


async def precheck_done(client: Client, timeout: float = 15) -> str:
    """Wait for the pre-call check's connection verdict; returns it (good|weak|unreachable)."""
    verdict = client.page.locator("#precheck-verdict")
    await client.page.wait_for_function(
        "() => ['good', 'weak', 'unreachable'].includes("
        "document.querySelector('#precheck-verdict')?.dataset.verdict)", timeout=timeout * 1000)
    return str(await verdict.get_attribute("data-verdict"))


async def join(client: Client, url: str, wait_check: bool = True) -> None:
    """Open a join link, let the pre-call check finish, press Join."""
    await client.page.goto(url)
    if wait_check:
        await precheck_done(client)
    join_btn = client.page.locator("#btn-join")
    await join_btn.wait_for(state="visible")
    await client.page.wait_for_function(
        "() => !document.querySelector('#btn-join').disabled", timeout=15000)
    await join_btn.click()


async def wait_js(client: Client, expr: str, timeout: float = 15) -> None:
    try:
        await client.page.wait_for_function(expr, timeout=timeout * 1000, polling=100)
    except Exception as exc:  # add the page's console to the failure
        raise AssertionError(f"{client.name}: not true after {timeout}s: {expr}\n"
                             f"{client.log()}") from exc


def tile_js(participant_id: str, attribute: str) -> str:
    """JS for a data attribute of a participant's tile (camelCase name)."""
    sel = f'#tiles [data-participant-id="{participant_id}"]'
    return f"document.querySelector('{sel}')?.dataset.{attribute}"


async def video_streams(client: Client, min_frames: int) -> int:
    """How many remote videos this page has decoded at least ``min_frames`` frames of."""
    stats = await inbound(client.page)
    return sum(1 for s in stats if s["kind"] == "video" and s["framesDecoded"] >= min_frames)


async def sub_video_frames(client: Client) -> list[int]:
    result: list[int] = await client.page.evaluate(SUB_VIDEO)
    return result


async def screenshot(client: Client, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    # let layout and video settle for a moment
    await client.page.wait_for_timeout(300)
    await client.page.screenshot(path=str(path))
    return path


async def box(client: Client, selector: str) -> FloatRect:
    b = await client.page.locator(selector).bounding_box()
    assert b is not None, f"{selector} is not rendered"
    return b


def overlaps(a: FloatRect, b: FloatRect) -> bool:
    return not (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


# ---- a clinic in two browsers ----------------------------------------------------------------

async def open_call(server: HospitalSystem, browser: Browser, *,
                    patient_viewport: ViewportSize = PHONE,
                    patient_scripts: list[str] | None = None) -> tuple[str, Client, Client]:
    """A clinic room: the doctor joins, the patient passes the check, waits, is admitted."""
    room = await server.create_room("clinic", "Cardiology follow-up")
    doctor = await open_client(browser, "doctor", DESKTOP)
    patient = await open_client(browser, "patient", patient_viewport, patient_scripts)
    await join(doctor, await server.join_url(room, "dr-li", "doctor", "Dr Li"))
    await wait_js(doctor, "window.huizhen.state === 'joined' && window.huizhen.view === 'call'")
    await join(patient, await server.join_url(room, "pat-wang", "patient", "Wang Fang"))
    await wait_js(patient, "window.huizhen.view === 'lobby'")
    item = doctor.page.locator("#lobby-list li[data-participant-id]")
    await item.wait_for(timeout=10000)
    await item.locator(".btn-admit").click()
    await wait_js(patient, "window.huizhen.view === 'call'")
    return room, doctor, patient


async def decodes(client: Client, streams: int = 1, frames: int = 30) -> bool:
    return await video_streams(client, frames) >= streams


async def me_id(client: Client) -> str:
    return str(await client.js("window.huizhen.me.id"))


async def close_all(*clients: Client) -> None:
    for c in clients:
        await c.close()
