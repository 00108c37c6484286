"""The aiohttp application: REST API, WebSocket signalling, the web client, and start/stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from importlib import resources
from pathlib import Path

from aiohttp import web

from caseimages.service import CaseImages
from huizhen.config import Settings, audit_keys
from media.echo import EchoService
from media.ice import IcePolicy, TurnServerSpec
from media.sfu import Sfu
from media.turn import TurnRest
from media.udpmux import UdpMux
from observability import http as observability
from observability.metrics import Metrics
from recording.crypto import KeyRing
from recording.db import RecordingDb
from recording.service import RecordingService
from recording.storage import open_storage
from recording.worker import WorkerProcess
from records.access import RecordAccess, url_key
from records.audit import AuditLog
from records.documents import Documents
from records.encounters import RecordsService
from records.fhir_search import FhirRecord
from records.signing import key_store
from rooms.db import Database
from rooms.service import RoomService
from rooms.store import MemoryRoomStateStore
from signaling import (
    admin_api,
    api,
    appointments_api,
    documents_api,
    fhir_api,
    images_api,
    openapi,
    recording_api,
    records_api,
    records_view,
    webhooks_api,
)
from signaling.drain import Drain
from signaling.keys import (
    ACCESS,
    AUDIT,
    DOCUMENTS,
    DRAIN,
    ECHO,
    FHIR,
    IMAGES,
    KEYRING,
    NODE,
    RECORDING,
    RECORDS,
    ROOMS,
    SETTINGS,
    SFU,
    STORAGE,
    WEBHOOKS,
)
from signaling.node import NodeLoad
from signaling.tls import ssl_context
from signaling.ws import websocket_handler
from webhooks.dispatcher import Dispatcher

log = logging.getLogger("huizhen")


def ice_policy(settings: Settings) -> IcePolicy:
    ice = settings.ice
    return IcePolicy(
        gather_addresses=list(ice.gather_addresses),
        announce_addresses=dict(ice.announce_addresses),
        stun_servers=list(ice.stun_servers),
        turn_servers=[TurnServerSpec(t.url, t.username, t.credential) for t in ice.turn_servers],
        ignore_mdns_candidates=ice.ignore_mdns_candidates,
        turn=TurnRest(ice.turn.secret.get_secret_value(), list(ice.turn.urls),
                      ice.turn.max_credential_ttl_s) if ice.turn.urls else None,
    )


def static_folder() -> Path:
    return Path(str(resources.files("web_client").joinpath("static")))


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[observability.request_ids, api.api_errors,
                                       records_view.records_errors, fhir_api.fhir_errors],
                          client_max_size=1024 * 1024)
    app[SETTINGS] = settings
    api.add_routes(app)
    recording_api.add_routes(app)
    records_api.add_routes(app)
    records_view.add_routes(app)
    fhir_api.add_routes(app)
    webhooks_api.add_routes(app)
    appointments_api.add_routes(app)
    documents_api.add_routes(app)
    images_api.add_routes(app)
    admin_api.add_routes(app)
    openapi.add_routes(app)  # /api/openapi.json: every declared /api/ route, found at request time
    app.router.add_get("/ws/{room_id}", websocket_handler)
    observability.add_routes(app, Metrics(), settings.metrics.token.get_secret_value(),
                             settings.metrics.enabled)
    static = static_folder()

    async def index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(static / "index.html")

    async def join_page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(static / "join.html")

    async def records_page(request: web.Request) -> web.FileResponse:
        return web.FileResponse(static / "records.html")

    app.router.add_get("/", index)
    app.router.add_get("/join/{room_id}", join_page)
    app.router.add_get("/records", records_page)
    app.router.add_static("/static", static)
    app.cleanup_ctx.append(_services)
    app.cleanup_ctx.append(_monitoring)
    app.on_shutdown.append(_stop_rooms)
    return app


async def _stop_rooms(app: web.Application) -> None:
    """Runs before aiohttp closes the sockets, so leaves are recorded as server_shutdown
    (recordings are stopped first: their files close while the media still flows)."""
    if RECORDING in app:
        await app[RECORDING].stop_service()
    if ROOMS in app:
        await app[ROOMS].stop()


async def _services(app: web.Application):  # type: ignore[no-untyped-def]
    settings: Settings = app[SETTINGS]
    policy = ice_policy(settings)
    policy.install()
    if settings.media.udp_port:  # one UDP port for all media (media/udpmux.py)
        policy.udp_mux = UdpMux(list(settings.ice.gather_addresses), settings.media.udp_port)
        policy.udp_mux.start()
    storage = open_storage(settings)
    try:
        await storage.check()  # here, so that a bad folder or bucket fails the start
    except BaseException:
        await storage.close()
        raise
    keys, active_key = audit_keys(settings)
    db = await Database.open(settings.database_url)
    try:
        webhooks = Dispatcher(db, settings)  # checks its endpoints before anything starts
    except BaseException:
        await db.close()
        raise
    sfu = Sfu(policy, settings.media.video_codec, settings.media.pli_throttle_ms / 1000)
    service = RoomService(db, MemoryRoomStateStore(), sfu, settings.rooms.unattended_end_s,
                          settings.rooms.join_early_s)
    await service.start()
    recordings = RecordingService(service, RecordingDb(db), settings.recordings_folder)
    await recordings.start_service()
    workers = [WorkerProcess(settings, i) for i in range(settings.recording.workers)]
    for worker in workers:
        await worker.start()
    app[ROOMS] = service
    app[SFU] = sfu
    app[RECORDING] = recordings
    app[AUDIT] = AuditLog(db, keys, active_key)
    app[RECORDS] = RecordsService(service, db)
    app[ACCESS] = RecordAccess(app[RECORDS].encounters, app[AUDIT], url_key(keys[active_key]))
    app[FHIR] = FhirRecord(db, app[RECORDS].encounters, app[AUDIT], app[ACCESS],
                           settings.base_url, settings.records.fhir.patient_system)
    app[DOCUMENTS] = Documents(service, db, key_store(settings))
    app[STORAGE] = storage
    keyring = KeyRing.from_config(settings.recording.encryption)
    if keyring is not None:
        app[KEYRING] = keyring
    app[IMAGES] = CaseImages(service, db, storage, keyring, settings.images)
    service.add_observer(app[IMAGES])
    app[ECHO] = EchoService(policy)
    app[WEBHOOKS] = webhooks
    app[DRAIN] = Drain(service, recordings, settings.server.drain_timeout_s,
                       settings.server.drain_retry_ms)
    app[NODE] = NodeLoad(service)
    await webhooks.start()
    log.info("service ready", extra={"url": settings.base_url, "mode": settings.mode,
                                     "database": db.engine.url.render_as_string(
                                         hide_password=True)})
    yield
    await app[DRAIN].close()
    await recordings.stop_service()  # no-op after on_shutdown; covers a failed start
    await webhooks.stop()
    await service.stop()
    for worker in workers:
        await worker.stop()
    await app[ECHO].close()
    if policy.udp_mux is not None:
        policy.udp_mux.close()
    await storage.close()
    await db.close()


async def _monitoring(app: web.Application):  # type: ignore[no-untyped-def]
    """The rooms and media of the running service in /metrics (observability/)."""
    metrics = app[SETTINGS].metrics
    if metrics.enabled and not metrics.token.get_secret_value():
        log.warning("metrics.token is not set: /metrics is open (dev mode only)")
    async with app[observability.METRICS].watching(app[SFU], app[ROOMS], app[RECORDING]):
        yield


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    """Run until drained (SIGTERM, or ``POST /api/admin/drain``: signaling/drain.py), or
    SIGINT / a second SIGTERM (stop at once: recordings still finished, clients told 1012)."""
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, settings.server.host, settings.server.port,
                       ssl_context=ssl_context(settings))
    await site.start()
    log.info("listening", extra={"host": settings.server.host, "port": settings.server.port,
                                 "url": settings.base_url})
    stop = asyncio.Event()
    drain = app[DRAIN]

    def on_sigterm() -> None:
        if drain.started:
            stop.set()  # a second SIGTERM: at once
        else:
            drain.begin(by="SIGTERM")

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    if ready is not None:
        ready.set()
    stopping = asyncio.ensure_future(stop.wait())
    drained = asyncio.ensure_future(drain.done.wait())
    try:
        await asyncio.wait([stopping, drained], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        drained.cancel()
        log.info("shutting down")
        await runner.cleanup()
