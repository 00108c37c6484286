"""S3 for tests: a real S3-protocol server (moto in server mode) on 127.0.0.1, over HTTP.

``s3_server`` (session-scoped) starts ``moto_server`` from the virtualenv on a free port, waits
until it answers, creates a bucket and stops the server at the end. Storage code then talks to
it through aiobotocore exactly as it would to MinIO or Ceph: signed HTTP requests, multipart
uploads, ranged GETs. moto keeps S3's rules (e.g. 5 MiB minimum multipart part).

``storage`` (function-scoped) is parametrized over the two backends, so a test written once runs
on a local folder and on the bucket (each S3 test gets its own key prefix). Without moto the
tests fail (they are never skipped): install the test extras (``pip install -e .[test]``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import pytest

from recording.s3storage import S3Storage
from recording.storage import LocalStorage, Storage

LOCAL_HOST = "127.0.0.1"
ACCESS_KEY, SECRET_KEY, REGION = "huizhen-test", "huizhen-test-secret", "us-east-1"
INSTALL_HINT = "install the test extras (.venv/bin/pip install -e '.[test]'), which bring moto"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCAL_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _moto_command(port: int) -> list[str]:
    script = Path(sys.executable).parent / "moto_server"
    if script.exists():
        return [str(script), "-H", LOCAL_HOST, "-p", str(port)]
    if shutil.which("moto_server"):
        return ["moto_server", "-H", LOCAL_HOST, "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", LOCAL_HOST, "-p", str(port)]


@dataclass
class S3Server:
    endpoint_url: str
    bucket: str
    access_key_id: str = ACCESS_KEY
    secret_access_key: str = SECRET_KEY
    region: str = REGION

    def client(self) -> Any:
        """A plain (sync) botocore client, for looking behind the storage's back."""
        return botocore.session.get_session().create_client(
            "s3", region_name=self.region, endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key)

    def storage(self, prefix: str | None = None, **overrides: Any) -> S3Storage:
        """An S3Storage on this server under a fresh prefix (tests do not see each other)."""
        args: dict[str, Any] = {
            "bucket": self.bucket, "endpoint_url": self.endpoint_url, "region": self.region,
            "prefix": f"t-{secrets.token_hex(4)}" if prefix is None else prefix,
            "access_key_id": self.access_key_id, "secret_access_key": self.secret_access_key,
            "addressing_style": "path",
        }
        args.update(overrides)
        return S3Storage(**args)

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)


def _wait_until_answering(url: str, proc: subprocess.Popen[bytes], log: Path,
                          timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}:\n"
                               f"{log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=2) as answer:
                if answer.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"moto_server did not answer on {url} within {timeout_s:.0f} s:\n"
                               f"{log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1:<free port> with one bucket (see module docstring)."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        pytest.fail(f"S3 tests need moto[server]; {INSTALL_HINT}", pytrace=False)
    port = _free_port()
    root = Path(tempfile.mkdtemp(prefix="huizhen-moto-"))
    log = root / "moto.log"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_DEFAULT_REGION": REGION}
    with log.open("wb") as out:
        proc = subprocess.Popen(_moto_command(port), stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=root)
    url = f"http://{LOCAL_HOST}:{port}"
    try:
        try:
            _wait_until_answering(url, proc, log)
        except RuntimeError as exc:
            pytest.fail(f"could not start an S3 test server: {exc}", pytrace=False)
        server = S3Server(endpoint_url=url, bucket="huizhen-recordings")
        server.create_bucket(server.bucket)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    """The same tests on a local folder and on the S3 server (``test_x[local]``, ``[s3]``)."""
    store: Storage
    if request.param == "local":
        store = LocalStorage(tmp_path / "store")
    else:
        store = request.getfixturevalue("s3_server").storage()
    try:
        yield store
    finally:
        await store.close()
