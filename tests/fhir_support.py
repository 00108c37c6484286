"""Reading /fhir/ in tests: every answer is parsed back into the fhir.resources R4B model of
its type (a Bundle validates each entry as its own type), so a resource that does not
validate fails the test that fetched it."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
from fhir.resources.R4B import get_fhir_model_class

from tests.harness import Server

TYPES = ("Encounter", "Media", "Consent", "Communication", "AuditEvent")


async def fhir_get(server: Server, path: str, auth: bool = True) -> tuple[int, dict[str, Any]]:
    headers = server.api_headers() if auth else {}
    async with aiohttp.ClientSession() as http, http.get(server.url + path,
                                                         headers=headers) as response:
        assert response.content_type == "application/fhir+json", response.content_type
        body = await response.json(content_type=None)
    model = get_fhir_model_class(body["resourceType"])
    model.model_validate(body)
    return response.status, body


async def search(server: Server, query: str) -> list[dict[str, Any]]:
    status, bundle = await fhir_get(server, f"/fhir/{query}")
    assert status == 200 and bundle["type"] == "searchset", bundle
    found = [e["resource"] for e in bundle.get("entry", [])]
    assert bundle["total"] == len(found)
    return found


async def patient_id(server: Server, ref: str) -> str:
    (found,) = await search(server, f"Patient?identifier={quote(ref)}")
    assert found["identifier"][0]["value"] == ref
    return str(found["id"])


async def record_of(server: Server, ref: str) -> dict[str, list[dict[str, Any]]]:
    """Each resource type a search by the patient returns."""
    pid = await patient_id(server, ref)
    return {kind: await search(server, f"{kind}?patient=Patient/{pid}") for kind in TYPES}
