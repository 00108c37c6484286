"""Encryption at rest for recordings: AES-256-GCM in independently sealed chunks.

Why chunks: a recording is played back with seeks (HTTP ranges, PyAV), and one GCM seal over a
whole file could only be checked after reading all of it. Each chunk here is sealed on its own,
so any byte range is served by decrypting (and authenticating) just the chunks that cover it.

File format (version 1; all integers big-endian)::

    header
      magic        8 bytes   b"HZENCREC"
      version      1 byte    1
      key id len   1 byte    1..64
      key id       n bytes   ASCII, e.g. "2025-01"
      chunk size   4 bytes   plaintext bytes per chunk (65536 by default)
      nonce prefix 8 bytes   random, per file
      key check   16 bytes   HMAC-SHA256(key, "huizhen key check" + everything above)[:16]
    chunks, in order; chunk i = AES-256-GCM(key, nonce, plaintext_i, aad) = ciphertext_i + tag
      nonce  = nonce prefix (8) + i (4)
      aad    = the whole header + i (4) + last flag (1: 0x01 on the final chunk, else 0x00)

Every chunk but the last holds exactly ``chunk size`` plaintext bytes; the last holds 0..chunk
size (an empty file is one empty sealed chunk), so the plaintext size follows from the
ciphertext size alone. The header is bound into every chunk: a changed key id, chunk size or
nonce fails; the index in nonce and aad makes reordered chunks fail; the last flag makes a file
cut at a chunk boundary fail. The key check tells "this is not the key the file was sealed
with" (a configuration problem) apart from "chunk 7 was changed" (an integrity problem).

Keys: a ``KeyRing`` maps key ids to 32-byte keys; new files use the active id, old files name
theirs in the header, so rotating to a new active key leaves old recordings readable as long as
their key stays in the ring. Nonce prefixes are random (64 bits): rotate the key well before
2^32 files have been written under one id (in practice, rotate yearly).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import re
import struct
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

if TYPE_CHECKING:
    from huizhen.config_records import EncryptionConfig

MAGIC = b"HZENCREC"
VERSION = 1
KEY_BYTES = 32
TAG_BYTES = 16
NONCE_PREFIX_BYTES = 8
KEY_CHECK_BYTES = 16
DEFAULT_CHUNK_SIZE = 64 * 1024
MAX_CHUNK_SIZE = 64 * 1024 * 1024
MAX_CHUNKS = 2**32
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
#: The longest possible header: enough bytes to read before parsing one.
MAX_HEADER_BYTES = 8 + 1 + 1 + 64 + 4 + NONCE_PREFIX_BYTES + KEY_CHECK_BYTES
KEYS_ENV = "HUIZHEN_RECORDING__ENCRYPTION__KEYS"

SyncRead = Callable[[int, int], bytes]
AsyncRead = Callable[[int, int], Awaitable[bytes]]


class EncryptionError(Exception):
    """Encryption cannot start (no active key, a bad key); the message says what to set."""


class DecryptionError(Exception):
    """The file cannot be decrypted: unknown key id, wrong key, or changed/truncated bytes.

    Never swallowed into garbage output: a reader raises this instead of returning bytes it
    could not authenticate."""


class KeyRing:
    """Key id → 32-byte key, plus the id that encrypts new files."""

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        for key_id, key in keys.items():
            if not KEY_ID_PATTERN.match(key_id):
                raise EncryptionError(
                    f"encryption key id {key_id!r} must be 1-64 characters of A-Z a-z 0-9 . _ -")
            if len(key) != KEY_BYTES:
                raise EncryptionError(
                    f"encryption key {key_id!r} is {len(key)} bytes; AES-256 needs 32 "
                    "(generate one with: python -c 'import os,base64;"
                    "print(base64.b64encode(os.urandom(32)).decode())')")
        if active not in keys:
            raise EncryptionError(
                f"active encryption key {active!r} is not among the configured key ids "
                f"({', '.join(sorted(keys)) or 'none'}); set recording.encryption.active_key")
        self._keys = dict(keys)
        self.active_id = active

    @classmethod
    def from_config(cls, config: EncryptionConfig) -> KeyRing | None:
        """The ring of ``recording.encryption``, or None when encryption is off (no keys)."""
        if not config.active_key:
            return None
        return cls(config.key_bytes(), config.active_key)

    def key(self, key_id: str) -> bytes:
        try:
            return self._keys[key_id]
        except KeyError:
            raise DecryptionError(
                f"the file was encrypted with key id {key_id!r}, which is not configured; "
                f"add it to {KEYS_ENV} (old keys must stay after a rotation)") from None

    @property
    def ids(self) -> list[str]:
        return sorted(self._keys)

    def __repr__(self) -> str:  # never the keys themselves
        return f"KeyRing(ids={self.ids}, active={self.active_id!r})"


# ---- header -------------------------------------------------------------------------------


def _key_check(key: bytes, header_without_check: bytes) -> bytes:
    mac = hmac.new(key, b"huizhen key check" + header_without_check, hashlib.sha256)
    return mac.digest()[:KEY_CHECK_BYTES]


@dataclass(frozen=True)
class Header:
    key_id: str
    chunk_size: int
    nonce_prefix: bytes
    raw: bytes  # the exact header bytes: bound into every chunk's associated data

    @property
    def size(self) -> int:
        return len(self.raw)

    @classmethod
    def new(cls, key_id: str, key: bytes, chunk_size: int) -> Header:
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise EncryptionError(f"chunk size must be 1..{MAX_CHUNK_SIZE} bytes")
        kid = key_id.encode("ascii")
        prefix = os.urandom(NONCE_PREFIX_BYTES)
        body = MAGIC + bytes([VERSION, len(kid)]) + kid + struct.pack(">I", chunk_size) + prefix
        return cls(key_id, chunk_size, prefix, body + _key_check(key, body))

    @classmethod
    def parse(cls, data: bytes, where: str = "file") -> Header:
        """Parse the header at the start of ``data`` (which may run on into the chunks)."""
        if len(data) < len(MAGIC) + 2 or data[: len(MAGIC)] != MAGIC:
            raise DecryptionError(f"{where} is not a Huizhen encrypted recording (bad magic)")
        if data[len(MAGIC)] != VERSION:
            raise DecryptionError(
                f"{where} uses encryption format version {data[len(MAGIC)]}; this version of "
                f"Huizhen reads version {VERSION} (upgrade it)")
        kid_len = data[len(MAGIC) + 1]
        start = len(MAGIC) + 2
        end = start + kid_len + 4 + NONCE_PREFIX_BYTES + KEY_CHECK_BYTES
        if kid_len == 0 or len(data) < end:
            raise DecryptionError(f"{where} has a truncated header")
        try:
            key_id = data[start : start + kid_len].decode("ascii")
        except UnicodeDecodeError:
            raise DecryptionError(f"{where} has a damaged header (key id)") from None
        pos = start + kid_len
        (chunk_size,) = struct.unpack(">I", data[pos : pos + 4])
        prefix = data[pos + 4 : pos + 4 + NONCE_PREFIX_BYTES]
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise DecryptionError(f"{where} has a damaged header (chunk size {chunk_size})")
        return cls(key_id, chunk_size, prefix, bytes(data[:end]))

    def check_key(self, key: bytes, where: str = "file") -> None:
        body, check = self.raw[:-KEY_CHECK_BYTES], self.raw[-KEY_CHECK_BYTES:]
        if not hmac.compare_digest(_key_check(key, body), check):
            raise DecryptionError(
                f"{where}: the key configured as {self.key_id!r} is not the key this file was "
                f"encrypted with (or its header was changed); check {KEYS_ENV}")


def is_encrypted(head: bytes) -> bool:
    """Whether bytes read from the start of a file begin like an encrypted recording."""
    return head[: len(MAGIC)] == MAGIC


def plaintext_size(cipher_size: int, header: Header) -> int:
    """Plaintext bytes in a ciphertext of ``cipher_size`` bytes (header included)."""
    return _Layout(header, cipher_size, "file").plain_size


def _aad(header: Header, index: int, last: bool) -> bytes:
    return header.raw + struct.pack(">IB", index, 1 if last else 0)


def _nonce(header: Header, index: int) -> bytes:
    return header.nonce_prefix + struct.pack(">I", index)


# ---- the sans-IO core: which ciphertext bytes hold a plaintext range, and opening them ------


class _Layout:
    """Chunk geometry and decryption for one encrypted object of known size.

    Does no I/O, so the sync reader, the async reader and ``DecryptingFile`` share it."""

    def __init__(self, header: Header, cipher_size: int, where: str,
                 key: bytes | None = None) -> None:
        self.header, self.where = header, where
        self.cipher_size = cipher_size
        self.sealed = header.chunk_size + TAG_BYTES
        body = cipher_size - header.size
        if body < TAG_BYTES:
            raise DecryptionError(f"{where} is truncated (no complete chunk after the header)")
        self.chunks = -(-body // self.sealed)
        last = body - (self.chunks - 1) * self.sealed
        if last < TAG_BYTES:
            raise DecryptionError(f"{where} is truncated or padded (last chunk is {last} bytes)")
        if self.chunks > MAX_CHUNKS:
            raise DecryptionError(f"{where} is larger than the format allows")
        self.plain_size = body - self.chunks * TAG_BYTES
        self._aead = AESGCM(key) if key is not None else None

    def cipher_span(self, first: int, last: int) -> tuple[int, int]:
        """Ciphertext [start, end) of chunks first..last (inclusive)."""
        start = self.header.size + first * self.sealed
        end = min(self.header.size + (last + 1) * self.sealed, self.cipher_size)
        return start, end

    def chunk_range(self, start: int, end: int) -> tuple[int, int] | None:
        """First and last chunk covering plaintext [start, end), clamped; None if empty."""
        if start < 0 or end < start:
            raise ValueError(f"bad range [{start}, {end})")
        end = min(end, self.plain_size)
        if start >= end:
            return None
        cs = self.header.chunk_size
        return start // cs, (end - 1) // cs

    def open_chunk(self, index: int, sealed: bytes) -> bytes:
        assert self._aead is not None
        last = index == self.chunks - 1
        try:
            return self._aead.decrypt(_nonce(self.header, index), sealed,
                                      _aad(self.header, index, last))
        except InvalidTag:
            raise DecryptionError(
                f"{self.where}: chunk {index} of {self.chunks} (key id {self.header.key_id!r}) "
                "failed authentication: the file was changed, truncated or reordered") from None

    def open_span(self, first: int, data: bytes) -> list[bytes]:
        """Decrypt consecutive sealed chunks starting at chunk ``first``."""
        out = []
        for n, pos in enumerate(range(0, len(data), self.sealed)):
            out.append(self.open_chunk(first + n, data[pos : pos + self.sealed]))
        return out

    def slice(self, first: int, plains: list[bytes], start: int, end: int) -> bytes:
        base = first * self.header.chunk_size
        joined = b"".join(plains)
        return joined[start - base : min(end, self.plain_size) - base]


def _layout(head: bytes, cipher_size: int, keyring: KeyRing, where: str) -> _Layout:
    header = Header.parse(head, where)
    key = keyring.key(header.key_id)
    header.check_key(key, where)
    return _Layout(header, cipher_size, where, key)


class _Reader:
    """What the sync and async readers share: the layout, the sizes, the key id."""

    def __init__(self, layout: _Layout) -> None:
        self._layout = layout

    @property
    def plain_size(self) -> int:
        return self._layout.plain_size

    @property
    def key_id(self) -> str:
        return self._layout.header.key_id

    def _span(self, start: int, end: int) -> tuple[int, int, int] | None:
        """(first chunk, ciphertext start, ciphertext end) covering plaintext [start, end)."""
        chunks = self._layout.chunk_range(start, end)
        if chunks is None:
            return None
        return (chunks[0], *self._layout.cipher_span(*chunks))

    def _plain(self, first: int, sealed: bytes, start: int, end: int) -> bytes:
        return self._layout.slice(first, self._layout.open_span(first, sealed), start, end)


class EncryptedReader(_Reader):
    """Random access to the plaintext of an encrypted object through a sync ``read(a, b)``."""

    def __init__(self, layout: _Layout, read: SyncRead) -> None:
        super().__init__(layout)
        self._read = read

    @classmethod
    def open(cls, read: SyncRead, cipher_size: int, keyring: KeyRing,
             where: str = "file") -> EncryptedReader:
        head = read(0, min(MAX_HEADER_BYTES, cipher_size))
        return cls(_layout(head, cipher_size, keyring, where), read)

    def read_range(self, start: int, end: int) -> bytes:
        """Plaintext bytes [start, end) (clamped to the size), decrypting only their chunks."""
        span = self._span(start, end)
        if span is None:
            return b""
        first, a, b = span
        return self._plain(first, self._read(a, b), start, end)


class AsyncEncryptedReader(_Reader):
    """The same over an async ``read(a, b)`` (e.g. ``functools.partial(storage.read_range,
    key)``): a ranged request for an encrypted object in S3 fetches only the chunks it needs."""

    def __init__(self, layout: _Layout, read: AsyncRead) -> None:
        super().__init__(layout)
        self._read = read

    @classmethod
    async def open(cls, read: AsyncRead, cipher_size: int, keyring: KeyRing,
                   where: str = "object") -> AsyncEncryptedReader:
        head = await read(0, min(MAX_HEADER_BYTES, cipher_size))
        return cls(_layout(head, cipher_size, keyring, where), read)

    async def read_range(self, start: int, end: int) -> bytes:
        span = self._span(start, end)
        if span is None:
            return b""
        first, a, b = span
        return self._plain(first, await self._read(a, b), start, end)


def _file_reader(handle: Any) -> SyncRead:
    def read(start: int, end: int) -> bytes:
        handle.seek(start)
        data: bytes = handle.read(end - start)
        return data

    return read


# ---- whole files ---------------------------------------------------------------------------


def _atomic_output(dst: Path) -> tuple[Any, Path]:
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    return os.fdopen(fd, "wb"), Path(tmp)


def encrypt_file(src: Path, dst: Path, keyring: KeyRing,
                 chunk_size: int = DEFAULT_CHUNK_SIZE) -> str:
    """Encrypt ``src`` into ``dst`` (written aside and renamed: never half a file) with the
    active key; returns its key id, which the manifest records."""
    key_id = keyring.active_id
    key = keyring.key(key_id)
    header = Header.new(key_id, key, chunk_size)
    aead = AESGCM(key)
    out, tmp = _atomic_output(dst)
    try:
        with out, src.open("rb") as inp:
            out.write(header.raw)
            index = 0
            chunk = inp.read(chunk_size)
            while True:
                following = inp.read(chunk_size) if len(chunk) == chunk_size else b""
                last = not following
                if index >= MAX_CHUNKS:
                    raise EncryptionError(f"{src} is too large for chunk size {chunk_size}")
                out.write(aead.encrypt(_nonce(header, index), chunk, _aad(header, index, last)))
                if last:
                    break
                chunk, index = following, index + 1
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return key_id


def decrypt_file(src: Path, dst: Path, keyring: KeyRing) -> None:
    """Decrypt ``src`` into ``dst``; on any error ``dst`` is not created (no partial
    plaintext that might be mistaken for a good copy)."""
    out, tmp = _atomic_output(dst)
    try:
        with out, src.open("rb") as inp:
            size = os.fstat(inp.fileno()).st_size
            layout = _layout(inp.read(MAX_HEADER_BYTES), size, keyring, str(src))
            inp.seek(layout.header.size)
            for index in range(layout.chunks):
                out.write(layout.open_chunk(index, inp.read(layout.sealed)))
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class DecryptingFile(io.RawIOBase):
    """A read-only, seekable file object over the plaintext of a local encrypted file.

    Lets PyAV (``av.open(DecryptingFile(path, ring))``), HTTP range handlers and hashing read a
    recording as if it were not encrypted; only the chunks touched are decrypted, the last one
    kept for the sequential reads that demuxers do."""

    def __init__(self, path: Path | str, keyring: KeyRing) -> None:
        super().__init__()
        self.name = str(path)
        self._file = open(path, "rb")  # closed in close()
        try:
            size = os.fstat(self._file.fileno()).st_size
            self._layout = _layout(self._file.read(MAX_HEADER_BYTES), size, keyring, self.name)
        except BaseException:
            self._file.close()
            raise
        self._read = _file_reader(self._file)
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None

    @property
    def plain_size(self) -> int:
        return self._layout.plain_size

    @property
    def key_id(self) -> str:
        return self._layout.header.key_id

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def _chunk(self, index: int) -> bytes:
        if self._cached is None or self._cached[0] != index:
            a, b = self._layout.cipher_span(index, index)
            self._cached = (index, self._layout.open_chunk(index, self._read(a, b)))
        return self._cached[1]

    def readinto(self, buffer: Any) -> int:
        if self.closed:
            raise ValueError("read from a closed DecryptingFile")
        view = memoryview(buffer).cast("B")
        done = 0
        cs = self._layout.header.chunk_size
        while done < len(view) and self._pos < self._layout.plain_size:
            index, offset = divmod(self._pos, cs)
            piece = self._chunk(index)[offset : offset + len(view) - done]
            view[done : done + len(piece)] = piece
            done += len(piece)
            self._pos += len(piece)
        return done

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._layout.plain_size + offset
        else:
            raise ValueError(f"unsupported whence {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._file.close()
            self._cached = None
        super().close()
