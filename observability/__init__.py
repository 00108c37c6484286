"""Monitoring: Prometheus metrics at ``/metrics`` (metrics.py, collector.py, sampler.py,
http.py) and the request ids of the logs (http.py; the context itself is huizhen/logs.py).

It reads what the media engine and the rooms already count (media/stats.py, rooms/quality.py)
when Prometheus scrapes, and never sits on the forwarding path. Only signaling/ imports it
(the app, the WebSocket's message counts, the admin API's node load). docs/operations.md
lists the metrics.
"""
