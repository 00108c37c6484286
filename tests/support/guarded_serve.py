"""Run ``huizhen serve`` with every codec entry point of aiortc and PyAV booby-trapped.

If the server process ever creates a decoder or an encoder (which is what relaying decoded
frames, MediaRelay style, would do), the trap writes the call to $HUIZHEN_CODEC_TRAP and raises.
The no-transcoding test reads that file after real media went through the server.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import aiortc.codecs
import aiortc.rtcrtpreceiver
import aiortc.rtcrtpsender
import av

TRAP_FILE = os.environ["HUIZHEN_CODEC_TRAP"]


def _trap(name: str) -> Any:
    def trapped(*args: Any, **kwargs: Any) -> Any:
        with open(TRAP_FILE, "a", encoding="utf-8") as out:
            out.write(f"{name} {args!r:.200}\n")
        raise RuntimeError(f"codec trap: {name} called in the SFU process")

    return trapped


aiortc.codecs.get_decoder = _trap("get_decoder")
aiortc.codecs.get_encoder = _trap("get_encoder")
aiortc.rtcrtpreceiver.get_decoder = _trap("rtcrtpreceiver.get_decoder")
aiortc.rtcrtpsender.get_encoder = _trap("rtcrtpsender.get_encoder")
av.CodecContext.create = _trap("av.CodecContext.create")  # type: ignore[method-assign]

if __name__ == "__main__":
    from huizhen.cli import main

    sys.exit(main(["serve"]))
