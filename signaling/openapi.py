"""The REST API's OpenAPI 3.1 description, made from the handlers themselves.

Each ``/api/`` handler is declared with :func:`operation`: its summary, its parameters, the
JSON Schema of its request body and the schema of each response. The same declaration

* validates every request before the handler runs (path, query and header parameters and the
  JSON body, against exactly the schemas the spec shows; a mismatch is ``400 bad_request``
  naming the field), so what the spec promises to refuse is refused, and
* feeds :func:`openapi_spec`, which walks the application's router: a route added under
  ``/api/`` appears in ``GET /api/openapi.json`` with nothing else to edit (and
  ``tests/test_openapi.py`` fails for one that has no declaration).

The handlers keep their own checks of what a schema cannot say (``end`` after ``start``, a role
the room kind allows); those answer 400/404/409 as the spec lists.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator, FormatChecker

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Schema = dict[str, Any]

OPENAPI_PATH = "/api/openapi.json"
API_VERSION = "1"
_ATTRIBUTE = "__openapi__"
_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

ERROR: Schema = {
    "type": "object", "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string", "description": "machine-readable, stable"},
                       "message": {"type": "string", "description": "what to do, for people"}},
    }},
}
#: what an error status means when an operation does not say more
ERROR_TEXT = {400: "The request is invalid: `error.message` names the field.",
              401: "No API token, or it does not verify (`error.code` says why).",
              403: "Not permitted.", 404: "Not found.", 409: "Conflicts with the state.",
              410: "Deleted under the retention rules.", 413: "Too large.",
              415: "Unsupported media type.", 503: "Busy or not ready; try again."}


class BadRequest(ValueError):
    """A request the API refuses with ``400`` (the message names the field); its code is
    ``bad_request`` unless the schema that refused it names another (``x-error-code``)."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # path | query | header
    schema: Schema
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Reply:
    """One response: its description, and its body's schema per media type."""

    description: str
    content: Mapping[str, Schema] = field(default_factory=dict)


def reply(description: str, schema: Schema | None = None) -> Reply:
    return Reply(description, {} if schema is None else {"application/json": schema})


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    responses: Mapping[int, Reply]
    description: str = ""
    params: tuple[Param, ...] = ()
    body: Schema | None = None
    body_required: bool = True
    #: media types of a raw body (an upload), not validated as JSON
    raw_body: tuple[str, ...] = ()
    public: bool = False
    name: str = ""
    #: a request body that works (a function for one that depends on the time, say)
    example: Schema | Callable[[], Schema] | None = None

    def document(self, path_params: list[str]) -> dict[str, Any]:
        declared = {p.name for p in self.params if p.where == "path"}
        params = [Param(n, "path", ID, "an id the API returned", True)
                  for n in path_params if n not in declared] + list(self.params)
        out: dict[str, Any] = {"operationId": self.name, "summary": self.summary,
                               "tags": [self.tag]}
        if self.description:
            out["description"] = self.description
        if params:
            out["parameters"] = [
                {"name": p.name, "in": p.where, "required": p.required or p.where == "path",
                 "schema": p.schema, **({"description": p.description} if p.description
                                        else {})} for p in params]
        if self.body is not None:
            media: dict[str, Any] = {"schema": self.body}
            if self.example is not None:
                media["example"] = self.example() if callable(self.example) else self.example
            out["requestBody"] = {"required": self.body_required,
                                  "content": {"application/json": media}}
        elif self.raw_body:
            out["requestBody"] = {"required": True, "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in self.raw_body}}
        statuses: dict[int, Reply] = dict(self.responses)
        errors = [400] if params or self.body is not None else []
        if not self.public:
            errors.append(401)
        if path_params:
            errors.append(404)
        for status in errors:
            statuses.setdefault(status, error(ERROR_TEXT[status]))
        out["responses"] = {
            str(status): {"description": r.description, **(
                {"content": {m: {"schema": s} for m, s in r.content.items()}}
                if r.content else {})}
            for status, r in sorted(statuses.items())}
        out["security"] = [] if self.public else [{"apiToken": []}]
        return out


def error(description: str) -> Reply:
    return reply(description, ERROR)


def errors(*statuses: int) -> dict[int, Reply]:
    return {s: error(ERROR_TEXT[s]) for s in statuses}


#: an id the API hands out (rooms, recordings, encounters, documents, images, deliveries)
ID: Schema = {"type": "string", "pattern": r"^[A-Za-z0-9._~:-]{1,128}$"}


def operation(summary: str, *, tag: str, responses: Mapping[int, Reply],
              description: str = "", params: tuple[Param, ...] = (),
              body: Schema | None = None, body_required: bool = True,
              raw_body: tuple[str, ...] = (), public: bool = False, name: str = "",
              example: Schema | Callable[[], Schema] | None = None
              ) -> Callable[[Handler], Handler]:
    """Declare an ``/api/`` handler: the spec shows it and requests are checked against it."""

    def wrap(handler: Handler) -> Handler:
        op = Operation(summary, tag, responses, description, params, body, body_required,
                       raw_body, public, name or handler.__name__, example)
        checks = _checks(op)

        @functools.wraps(handler)
        async def checked(request: web.Request) -> web.StreamResponse:
            try:
                await _check(request, op, checks)
            except BadRequest as exc:
                return web.json_response({"error": {"code": exc.code, "message": str(exc)}},
                                         status=400)
            return await handler(request)

        setattr(checked, _ATTRIBUTE, op)
        return checked

    return wrap


#: RFC 3339 (what JSON Schema's ``date-time`` means), the zone included
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_NO_ZONE = re.compile(r"\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?")
FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if _NO_ZONE.fullmatch(value):
        raise ValueError("it needs a time zone, e.g. 2026-11-23T09:00:00+08:00")
    if not _RFC3339.fullmatch(value):
        raise ValueError("write it as RFC 3339, e.g. 2026-11-23T09:00:00+08:00")
    datetime.fromisoformat(value.upper())  # the 31st of February: ValueError
    return True


def _validator(schema: Schema) -> Draft202012Validator:
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FORMATS)


def _error_code(schema: Any, path: Iterable[str | int]) -> str:
    """The ``x-error-code`` of the deepest schema on the way to a failed keyword."""
    code, node = "bad_request", schema
    for part in path:
        if isinstance(node, dict):
            code = node.get("x-error-code", code)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
    return code


def _checks(op: Operation) -> dict[str, Draft202012Validator]:
    out = {f"{p.where}:{p.name}": _validator(p.schema) for p in op.params}
    if op.body is not None:
        out["body"] = _validator(op.body)
    return out


def _first_error(validator: Draft202012Validator, value: Any, what: str) -> BadRequest | None:
    """The first problem of ``value``, naming where it is; None if it conforms."""
    found = min(validator.iter_errors(value), default=None,
                key=lambda e: (len(e.path), [str(p) for p in e.path]))
    if found is None:
        return None
    where = ", ".join(f"item {p + 1}" if isinstance(p, int) else repr(p)
                      for p in found.absolute_path)
    message = found.message if len(found.message) <= 300 else found.message[:300] + "…"
    if found.cause is not None:
        message += f": {found.cause}"
    code = _error_code(validator.schema, found.absolute_schema_path)
    return BadRequest(f"field {where}: {message}" if where else f"{what}: {message}", code)


def _coerce(text: str, schema: Schema) -> Any:
    """A parameter's text as the type its schema names (integers and numbers)."""
    kind = schema.get("type")
    if kind == "integer" and re.fullmatch(r"-?[0-9]{1,18}", text):
        return int(text)
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            return text
        return number if math.isfinite(number) else text
    return text


async def _check(request: web.Request, op: Operation,
                 checks: dict[str, Draft202012Validator]) -> None:
    sources = {"path": request.match_info, "query": request.query, "header": request.headers}
    for p in op.params:
        text = sources[p.where].get(p.name)
        if text is None:
            if p.required:
                raise BadRequest(f"{p.where} parameter {p.name!r} is required")
            continue
        _plain_text(text, f"{p.where} parameter {p.name!r}")
        problem = _first_error(checks[f"{p.where}:{p.name}"], _coerce(text, p.schema),
                               f"{p.where} parameter {p.name!r}")
        if problem is not None:
            raise problem
    for name in _PATH_PARAM.findall(_template(request)):
        if f"path:{name}" not in checks and not ID_CHECK.is_valid(request.match_info[name]):
            raise BadRequest(f"path parameter {name!r} must be an id as the API returns it "
                             "(letters, digits, . _ ~ : -; at most 128)")
    if op.body is None or (not op.body_required and not request.body_exists):
        return
    raw = await request.read()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(f"the body must be JSON (UTF-8): {exc}") from exc
    try:
        _plain_text(data)
        problem = _first_error(checks["body"], data, "the body")
    except RecursionError as exc:
        raise BadRequest("the body is nested too deeply") from exc
    if problem is not None:
        raise problem


ID_CHECK = Draft202012Validator(ID)


def _plain_text(value: Any, where: str = "the body") -> None:
    """Refuse text no database keeps: a NUL character (PostgreSQL refuses it) or a lone
    UTF-16 surrogate (``"\\ud800"`` is valid JSON, but not UTF-8)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BadRequest(f"{where}: text must be valid Unicode (a lone surrogate at "
                             f"{exc.start})") from exc
        if "\x00" in value:
            raise BadRequest(f"{where}: text must not contain NUL characters")
    elif isinstance(value, dict):
        for key, item in value.items():
            _plain_text(key, where)
            _plain_text(item, where)
    elif isinstance(value, list):
        for item in value:
            _plain_text(item, where)


def _template(request: web.Request) -> str:
    info = request.match_info.route.resource.get_info() if request.match_info.route.resource \
        else {}
    return str(info.get("formatter") or info.get("path") or "")


def declared(handler: Any) -> Operation | None:
    """The declaration of a handler, or None."""
    op = getattr(handler, _ATTRIBUTE, None)
    return op if isinstance(op, Operation) else None


def api_routes(app: web.Application) -> list[tuple[str, str, Any]]:
    """(method, path template, handler) of every route under ``/api/`` (HEAD left out)."""
    out = []
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        info = route.resource.get_info()
        path = str(info.get("formatter") or info.get("path") or "")
        if path.startswith("/api/"):
            out.append((route.method, path, route.handler))
    return out


def openapi_spec(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every declared ``/api/`` route of ``app`` (its server is
    ``/``: the host the document was read from, so a reverse proxy in front changes nothing)."""
    found = [(method, path, handler, op) for method, path, handler in api_routes(app)
             if (op := declared(handler)) is not None]
    names = Counter(op.name for *_, op in found)
    paths: dict[str, dict[str, Any]] = {}
    for method, path, handler, op in found:
        template = _PATH_PARAM.sub(lambda m: "{" + m.group(1) + "}", path)
        document = op.document(_PATH_PARAM.findall(path))
        if names[op.name] > 1:  # two modules' end_room: operationIds must be unique
            document["operationId"] = f"{handler.__module__.rsplit('.', 1)[-1]}.{op.name}"
        paths.setdefault(template, {})[method.lower()] = document
    return {
        "openapi": "3.1.0",
        "info": {"title": "Huizhen REST API", "version": API_VERSION, "description": (
            "Rooms, participant tokens, appointments, recordings and consents, the patient's "
            "record, documents, case images and webhook deliveries, for hospital systems. "
            "Generated from the service's own request and response declarations "
            "(signaling/openapi.py); docs/api.md has the prose. Errors are "
            '`{"error": {"code", "message"}}`; a request its schema refuses is 400 with code '
            "`bad_request`, or the `x-error-code` of the schema that refused it. Text anywhere "
            "in a request is Unicode without NUL characters or lone surrogates.")},
        "servers": [{"url": "/"}],
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "components": {"securitySchemes": {"apiToken": {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "An HS256 JWT signed with an API key's secret: `iss` = the key, "
                           "`aud` = `<auth.audience>:api`, `exp` at most 1 h after `iat` "
                           "(`huizhen key generate`; docs/api.md, Authentication)."}}},
        "paths": dict(sorted(paths.items())),
    }


@operation("This description (OpenAPI 3.1)", tag="meta", public=True,
           responses={200: reply("The OpenAPI 3.1 document of the REST API",
                                 {"type": "object", "required": ["openapi", "paths"]})})
async def serve_spec(request: web.Request) -> web.Response:
    return web.json_response(openapi_spec(request.app))


def add_routes(app: web.Application) -> None:
    app.router.add_get(OPENAPI_PATH, serve_spec)
