"""Typed keys for what the aiohttp application and requests carry."""

from __future__ import annotations

from aiohttp import web

from caseimages.service import CaseImages
from huizhen.config import Settings
from media.echo import EchoService
from media.sfu import Sfu
from recording.crypto import KeyRing
from recording.service import RecordingService
from recording.storage import Storage
from records.access import RecordAccess
from records.audit import AuditLog
from records.documents import Documents
from records.encounters import RecordsService
from records.fhir_search import FhirRecord
from rooms.service import RoomService
from signaling.drain import Drain
from signaling.node import NodeLoad
from webhooks.dispatcher import Dispatcher

SETTINGS = web.AppKey("settings", Settings)
ROOMS = web.AppKey("rooms", RoomService)
SFU = web.AppKey("sfu", Sfu)
ECHO = web.AppKey("echo", EchoService)
RECORDING = web.AppKey("recording", RecordingService)
AUDIT = web.AppKey("audit", AuditLog)
RECORDS = web.AppKey("records", RecordsService)
ACCESS = web.AppKey("access", RecordAccess)
FHIR = web.AppKey("fhir", FhirRecord)
STORAGE = web.AppKey("storage", Storage)
KEYRING = web.AppKey("keyring", KeyRing)  # set only when recordings are encrypted
WEBHOOKS = web.AppKey("webhooks", Dispatcher)
DOCUMENTS = web.AppKey("documents", Documents)
IMAGES = web.AppKey("images", CaseImages)
DRAIN = web.AppKey("drain", Drain)
NODE = web.AppKey("node", NodeLoad)
API_KEY = web.RequestKey("api_key", str)
