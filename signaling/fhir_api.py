"""``/fhir/``: the patient's record as HL7 FHIR R4 JSON for the hospital's EMR (docs/records.md).

Same API tokens as ``/api/`` (``Authorization: Bearer <API JWT>``); ``/fhir/metadata`` (the
CapabilityStatement) is open, as FHIR clients expect. Errors are ``OperationOutcome``s. The
resources are built and searched in records/ (fhir.py, fhir_search.py), which audits each call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from aiohttp import web
from fhir.resources.R4B.resource import Resource

from huizhen import __version__
from huizhen.config import Settings
from records import fhir
from records.fhir_search import Caller, FhirError, FhirRecord
from rooms.models import utcnow
from signaling.api import authenticate
from signaling.auth import AuthError
from signaling.keys import API_KEY, FHIR, SETTINGS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JSON_FORMATS = ("json", "application/json", "application/fhir+json")


def fhir_response(resource: Resource, status: int = 200) -> web.Response:
    return web.Response(text=resource.model_dump_json(), status=status,
                        content_type=fhir.CONTENT_TYPE, charset="utf-8",
                        headers={"Cache-Control": "no-store"})


@web.middleware
async def fhir_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/fhir/"):
        return await handler(request)
    try:
        if request.query.get("_format", "json") not in JSON_FORMATS:
            raise FhirError(406, "not-supported", "only JSON is served: _format=json")
        if request.path != "/fhir/metadata":
            authenticate(request)
        return await handler(request)
    except AuthError as exc:
        return fhir_response(fhir.outcome("security", exc.message), 401)
    except FhirError as exc:
        return fhir_response(fhir.outcome(exc.code, exc.message), exc.status)
    except web.HTTPException as exc:
        if exc.status >= 400:
            code = "not-found" if exc.status == 404 else "not-supported"
            return fhir_response(fhir.outcome(code, exc.reason), exc.status)
        raise


def _caller(request: web.Request) -> Caller:
    return Caller(f"api:{request[API_KEY]}", request.remote)


def _base(request: web.Request) -> str:
    settings: Settings = request.app[SETTINGS]
    return f"{settings.base_url}/fhir"


async def metadata(request: web.Request) -> web.Response:
    return fhir_response(fhir.capability(_base(request), __version__, utcnow()))


async def search(request: web.Request) -> web.Response:
    record: FhirRecord = request.app[FHIR]
    resource_type = request.match_info["type"]
    params = dict(request.query)
    if len(params) != len(request.query):
        raise FhirError(400, "not-supported", "give each search parameter once")
    page = await record.search(resource_type, params, _caller(request))
    base = _base(request)
    query = {k: v for k, v in params.items() if k not in ("_offset", "_format")}
    here = f"{base}/{resource_type}?{urlencode({**query, '_offset': page.offset})}"
    after = page.offset + page.count
    next_url = (f"{base}/{resource_type}?{urlencode({**query, '_offset': after})}"
                if after < page.total else None)
    return fhir_response(fhir.bundle(page.resources, base, here, next_url, page.total))


async def read(request: web.Request) -> web.Response:
    record: FhirRecord = request.app[FHIR]
    return fhir_response(await record.read(request.match_info["type"],
                                           request.match_info["id"], _caller(request)))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/fhir/metadata", metadata)
    app.router.add_get("/fhir/{type:[A-Za-z]+}", search)
    app.router.add_get("/fhir/{type:[A-Za-z]+}/{id:[A-Za-z0-9\\-.]{1,64}}", read)
