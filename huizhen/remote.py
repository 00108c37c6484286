"""Calling a running service's REST API from the command line.

``Api`` signs a short-lived API token with the configured key (in dev mode, the key in
``<data_dir>/dev-credentials.json``), or with ``--api-key`` / ``--api-secret`` /
``HUIZHEN_API_KEY`` / ``HUIZHEN_API_SECRET`` for a remote service. ``CliError`` is a failure
to report to the user (``huizhen``'s ``main()`` prints it and exits with ``EXIT_FAILED``).
Used by the ``huizhen`` commands (huizhen/cli.py) and by ``huizhen loadtest`` (loadtest/).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp

from huizhen.config import Settings, ensure_dev_credentials, load_settings

EXIT_USAGE = 2
EXIT_FAILED = 1


class CliError(Exception):
    pass


def load_cli_settings(args: argparse.Namespace) -> Settings:
    """The settings of ``--config`` (or the default file); creates the dev API key on first
    use, and prints it once if ``args.announce_dev_key`` is set."""
    settings = load_settings(Path(args.config) if args.config else None)
    created = ensure_dev_credentials(settings)
    if created is not None and getattr(args, "announce_dev_key", False):
        print("\nDev API key created (shown once; stored in "
              f"{settings.data_dir / 'dev-credentials.json'}):\n"
              f"  key:    {created.key}\n  secret: {created.secret}\n", file=sys.stderr)
    return settings


class Api:
    def __init__(self, args: argparse.Namespace) -> None:
        settings = load_cli_settings(args)
        self.url = (args.server or settings.base_url).rstrip("/")
        key = args.api_key or os.environ.get("HUIZHEN_API_KEY")
        secret = args.api_secret or os.environ.get("HUIZHEN_API_SECRET")
        if key and not secret:
            secret = settings.secret_for(key)
        if not key:
            if not settings.auth.api_keys:
                raise CliError("no API key: pass --api-key/--api-secret or configure "
                               "auth.api_keys")
            key, secret = settings.primary_key.key, settings.primary_key.secret
        if not secret:
            raise CliError(f"no secret for API key {key!r}: pass --api-secret")
        self.key, self.secret = key, secret
        self.audience = settings.auth.audience
        self.verify_tls = not args.insecure

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        from signaling.auth import mint_api_token

        headers = {"Authorization": "Bearer " + mint_api_token(self.key, self.secret,
                                                               self.audience)}
        try:
            async with aiohttp.ClientSession() as http, http.request(
                    method, self.url + path, json=body, headers=headers,
                    ssl=self.verify_tls) as resp:
                data = await resp.json(content_type=None)
        except aiohttp.ClientError as exc:
            raise CliError(f"cannot reach the service at {self.url}: {exc}. Is it running "
                           "(huizhen serve / make run)? Use --server to point elsewhere.") \
                from exc
        if resp.status >= 400:
            err = (data or {}).get("error", {})
            raise CliError(f"{err.get('code', resp.status)}: {err.get('message', data)}")
        return data
