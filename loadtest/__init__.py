"""``huizhen loadtest``: many headless participants against a running service, from one command.

The orchestrator (the ``huizhen loadtest`` process) creates a room through the REST API (unless
``--room`` names one), mints one participant token per participant, and starts worker processes
(``python -m loadtest.worker``; publishers in workers of their own), each running up to
``--per-process`` participants in one asyncio loop: publishers are
``sdk.participant.Participant``s, subscribers light viewers (``--viewer light``, the default:
ICE, DTLS, SRTP, receiver reports and NACKs without an aiortc peer connection) or
``Participant``s with ``decode=False`` (``--viewer full``); frames are counted from RTP, nothing
is decoded. Publishers join first, then subscribers, at ``--join-rate`` per
second; every publisher sends the test pattern (640x480 VP8, 30 fps at most, the encoder capped
at ``--video-kbps``) and a tone. Progress goes to stderr every ``--report`` seconds; once
everyone has joined (or failed), the figures are measured over ``--duration`` seconds and
reported on stdout (a table, or one JSON object with ``--json``).

* ``cli.py``: the ``loadtest`` subcommand (its arguments, checks, output, exit status)
* ``orchestrator.py``: the ``LoadTest`` run: room, tokens, worker processes, join pacing,
  measurement, the server's CPU, clean-up
* ``worker.py``: a worker process (its participants and their RTP counters) and the JSON-lines
  protocol it speaks with the orchestrator
* ``report.py``: what the user reads: progress lines, percentiles, the result table
* ``rtpcount.py``: ``RtpCounter``, what one received stream got (both viewer kinds)
* ``lightviewer.py``: the light viewer and the ``LightHub`` its worker shares

Nothing here is imported by the service; ``huizhen/cli.py`` adds the subcommand from ``cli.py``,
and the REST calls go through ``huizhen/remote.py``.
"""
