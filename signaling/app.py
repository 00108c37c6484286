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
    api,
    appointments_api,
    documents_api,
    fhir_api,
    images_api,
    recording_api,
    records_api,
    records_view,
    webhooks_api,
)
from signaling.keys import (
    ACCESS,
    AUDIT,
    DOCUMENTS,
    ECHO,
    FHIR,
    IMAGES,
    KEYRING,
    RECORDING,
    RECORDS,
    ROOMS,
    SETTINGS,
    SFU,
    STORAGE,
    WEBHOOKS,
)
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
    )


def static_folder() -> Path:
    return Path(str(resources.files("web_client").joinpath("static")))


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[api.api_errors, records_view.records_errors,
                                       fhir_api.fhir_errors],
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
    app.router.add_get("/ws/{room_id}", websocket_handler)
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
    await webhooks.start()
    log.info("service ready", extra={"url": settings.base_url, "mode": settings.mode,
                                     "database": db.engine.url.render_as_string(
                                         hide_password=True)})
    yield
    await recordings.stop_service()  # no-op after on_shutdown; covers a failed start
    await webhooks.stop()
    await service.stop()
    for worker in workers:
        await worker.stop()
    await app[ECHO].close()
    await storage.close()
    await db.close()


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM."""
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, settings.server.host, settings.server.port,
                       ssl_context=ssl_context(settings))
    await site.start()
    log.info("listening", extra={"host": settings.server.host, "port": settings.server.port,
                                 "url": settings.base_url})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()
