"""Admission latency in Chromium: from the doctor's click on "Admit" to the first video frame
on both sides.

A clinic room; the doctor's page (Chromium, desktop size) stays in the call; for each of
``--rounds`` admissions a new patient page (Chromium, phone size) opens its join link, passes
into the lobby, waits ``--settle`` seconds (what a patient waits anyway; it lets a pre-connected
lobby finish connecting), and the doctor clicks Admit. Each page notes, with
``requestVideoFrameCallback`` on every new <video>, when it first presents a frame of the
other's camera (both pages run on this machine: ``Date.now()`` is one clock). Printed per round
and as p50/p95/max: **patient** (admit → the patient sees the doctor), **doctor** (admit → the
doctor sees the patient) and **both** (the later of the two).

    .venv/bin/python bench/admission.py --rounds 20

Run it on a quiet machine (it starts three Chromium processes); compare two versions side by
side by running both in one go (``farm-bench``) rather than against an old figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import _paths  # noqa: F401  (the repository first on sys.path)
from playwright.async_api import async_playwright

from tests.browser import launch
from tests.harness import running_server
from tests.web_support import DESKTOP, PHONE, join, open_client, wait_js

# every <video> that appears reports its first presented frame: {participant id: ms}
FIRST_FRAMES = """
(() => {
  window.__firstFrame = {};
  const seen = new WeakSet();
  const watch = (video) => {
    if (seen.has(video)) return;
    seen.add(video);
    const note = () => {
      const tile = video.closest('[data-participant-id]');
      const pid = tile ? tile.dataset.participantId : '?';
      if (!(pid in window.__firstFrame)) window.__firstFrame[pid] = Date.now();
    };
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(note);
  };
  new MutationObserver(() => document.querySelectorAll('#tiles video').forEach(watch))
    .observe(document, { childList: true, subtree: true });
})();
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def run(rounds: int, settle: float) -> dict[str, Any]:
    results: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with running_server(Path(tmp)) as server, async_playwright() as pw:
            browser = await launch(pw)
            room = await server.create_room("clinic", "admission bench")
            doctor = await open_client(browser, "doctor", DESKTOP, [FIRST_FRAMES])
            await join(doctor, await server.join_url(room, "dr-bench", "doctor", "Dr Bench"),
                       wait_check=False)
            await wait_js(doctor, "window.huizhen.state === 'joined'")
            for n in range(rounds):
                patient = await open_client(browser, f"patient-{n}", PHONE, [FIRST_FRAMES])
                await join(patient, await server.join_url(room, f"pt-{n}", "patient",
                                                          f"Patient {n}"), wait_check=False)
                await wait_js(patient, "window.huizhen.view === 'lobby'")
                item = doctor.page.locator("#lobby-list li[data-participant-id]")
                await item.wait_for(timeout=10000)
                pid = await item.get_attribute("data-participant-id")
                await asyncio.sleep(settle)
                admit_at = await doctor.js(
                    "(() => { const t = Date.now(); document.querySelector("
                    "'#lobby-list li[data-participant-id] .btn-admit').click(); return t; })()")
                await wait_js(patient, "Object.keys(window.__firstFrame).length > 0", 20)
                await wait_js(doctor, f"'{pid}' in window.__firstFrame", 20)
                seen_doctor = min((await patient.js("window.__firstFrame")).values())
                seen_patient = (await doctor.js("window.__firstFrame"))[pid]
                row = {"patient_ms": seen_doctor - admit_at, "doctor_ms": seen_patient - admit_at}
                row["both_ms"] = max(row["patient_ms"], row["doctor_ms"])
                results.append(row)
                print(f"round {n + 1:2d}: patient sees doctor {row['patient_ms']:5.0f} ms, "
                      f"doctor sees patient {row['doctor_ms']:5.0f} ms", flush=True)
                await patient.close()
                await wait_js(doctor, f"!document.querySelector('#tiles [data-participant-id="
                              f"\"{pid}\"]')", 15)
            await doctor.close()
            await browser.close()
    summary: dict[str, Any] = {"rounds": rounds, "settle_s": settle}
    for key in ("patient_ms", "doctor_ms", "both_ms"):
        values = [r[key] for r in results]
        summary[key] = {"p50": statistics.median(values), "p95": pct(values, 0.95),
                        "max": max(values)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds a patient waits in the lobby before the admit")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    summary = asyncio.run(run(args.rounds, args.settle))
    if args.json:
        print(json.dumps(summary))
    else:
        for key, label in (("patient_ms", "patient sees the doctor"),
                           ("doctor_ms", "doctor sees the patient"),
                           ("both_ms", "both see each other")):
            s = summary[key]
            print(f"{label:26s} p50 {s['p50']:5.0f} ms  p95 {s['p95']:5.0f} ms  "
                  f"max {s['max']:5.0f} ms")
    print(f"({args.rounds} admissions in {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
