"""recording/crypto.py: chunked AES-256-GCM at rest — unreadable without the key, every change
detected, rotation keeps old files readable, random access and PyAV seeking work."""

from __future__ import annotations

import base64
import functools
import io
import os
import random
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from huizhen.config_records import EncryptionConfig
from recording.crypto import (
    TAG_BYTES,
    AsyncEncryptedReader,
    DecryptingFile,
    DecryptionError,
    EncryptedReader,
    EncryptionError,
    Header,
    KeyRing,
    decrypt_file,
    encrypt_file,
    is_encrypted,
    plaintext_size,
)
from recording.storage import Storage

CHUNK = 1024  # small chunks: many boundaries in small files


def ring(active: str = "k1", **keys: bytes) -> KeyRing:
    return KeyRing(keys or {"k1": b"\x01" * 32}, active)


RING = ring()


def plain(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def encrypt(tmp_path: Path, data: bytes, keyring: KeyRing = RING, chunk: int = CHUNK,
            name: str = "f") -> Path:
    src = tmp_path / f"{name}.plain"
    src.write_bytes(data)
    dst = tmp_path / f"{name}.enc"
    assert encrypt_file(src, dst, keyring, chunk_size=chunk) == keyring.active_id
    return dst


def decrypt(tmp_path: Path, src: Path, keyring: KeyRing = RING) -> bytes:
    out = tmp_path / "out.plain"
    out.unlink(missing_ok=True)
    try:
        decrypt_file(src, out, keyring)
    except DecryptionError:
        assert not out.exists(), "no partial plaintext may be left behind"
        raise
    return out.read_bytes()


def header_size(path: Path) -> int:
    return Header.parse(path.read_bytes()[:200]).size


# ---- round trips and sizes --------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5000])
def test_round_trip_and_sizes(tmp_path: Path, size: int) -> None:
    data = plain(size, seed=size)
    enc = encrypt(tmp_path, data)
    assert is_encrypted(enc.read_bytes()[:16])
    assert decrypt(tmp_path, enc) == data
    chunks = max(1, -(-size // CHUNK))
    assert enc.stat().st_size == header_size(enc) + size + chunks * TAG_BYTES
    header = Header.parse(enc.read_bytes())
    assert plaintext_size(enc.stat().st_size, header) == size
    with DecryptingFile(enc, RING) as f:
        assert f.plain_size == size
        assert f.read() == data


def test_default_chunk_size_and_key_id_in_header(tmp_path: Path) -> None:
    src = tmp_path / "a"
    src.write_bytes(plain(200_000))
    encrypt_file(src, tmp_path / "a.enc", RING)
    header = Header.parse((tmp_path / "a.enc").read_bytes())
    assert (header.key_id, header.chunk_size) == ("k1", 64 * 1024)


def test_nonce_prefix_differs_per_file(tmp_path: Path) -> None:
    a = Header.parse(encrypt(tmp_path, b"same", name="a").read_bytes())
    b = Header.parse(encrypt(tmp_path, b"same", name="b").read_bytes())
    assert a.nonce_prefix != b.nonce_prefix
    assert (tmp_path / "a.enc").read_bytes() != (tmp_path / "b.enc").read_bytes()


# ---- unreadable without the key --------------------------------------------------------------

def test_ciphertext_holds_no_plaintext(tmp_path: Path) -> None:
    data = ("患者 张三, 病历号 123456, 诊断: 高血压. " * 400).encode()
    cipher = encrypt(tmp_path, data).read_bytes()
    for start in range(0, len(data) - 16, 97):  # no 16-byte run of the plaintext survives
        assert data[start : start + 16] not in cipher
    assert "张三".encode() not in cipher


def test_wrong_key_is_an_error_naming_the_key_id(tmp_path: Path) -> None:
    enc = encrypt(tmp_path, plain(3000))
    wrong = ring(k1=b"\x02" * 32)
    with pytest.raises(DecryptionError, match=r"'k1' is not the key"):
        decrypt(tmp_path, enc, wrong)
    with pytest.raises(DecryptionError, match="k1"):
        DecryptingFile(enc, wrong)
    with pytest.raises(DecryptionError, match="k1"):
        EncryptedReader.open(_reader(enc), enc.stat().st_size, wrong)


def test_missing_key_id_is_an_error_naming_it_and_the_variable(tmp_path: Path) -> None:
    enc = encrypt(tmp_path, plain(3000), ring("old", old=b"\x03" * 32))
    with pytest.raises(DecryptionError,
                       match=r"key id 'old'.*HUIZHEN_RECORDING__ENCRYPTION__KEYS"):
        decrypt(tmp_path, enc, ring("new", new=b"\x04" * 32))


def test_not_an_encrypted_file(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"\x1aE\xdf\xa3 a plain webm file")
    with pytest.raises(DecryptionError, match="not a Huizhen encrypted recording"):
        decrypt(tmp_path, tmp_path / "x")


# ---- rotation -----------------------------------------------------------------------------------

def test_new_active_key_encrypts_new_files_and_old_stay_readable(tmp_path: Path) -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    old = encrypt(tmp_path, b"recorded in January", ring("2025-01", **{"2025-01": k1}),
                  name="old")
    rotated = ring("2025-02", **{"2025-01": k1, "2025-02": k2})
    new = encrypt(tmp_path, b"recorded in February", rotated, name="new")
    assert Header.parse(new.read_bytes()).key_id == "2025-02"
    assert decrypt(tmp_path, old, rotated) == b"recorded in January"
    assert decrypt(tmp_path, new, rotated) == b"recorded in February"
    with pytest.raises(DecryptionError, match="2025-02"):  # the old ring cannot read new files
        decrypt(tmp_path, new, ring("2025-01", **{"2025-01": k1}))


def test_keyring_from_config() -> None:
    key = base64.b64encode(b"\x07" * 32).decode()
    config = EncryptionConfig.model_validate({"keys": {"a": key, "b": key}, "active_key": "b"})
    keyring = KeyRing.from_config(config)
    assert keyring is not None
    assert (keyring.active_id, keyring.ids, keyring.key("a")) == ("b", ["a", "b"], b"\x07" * 32)
    assert key not in repr(keyring) and "\\x07" not in repr(keyring)
    assert KeyRing.from_config(EncryptionConfig()) is None  # encryption off


@pytest.mark.parametrize(("keys", "active", "needle"), [
    ({"k1": b"short"}, "k1", "32"),
    ({"bad id!": b"\x00" * 32}, "bad id!", "key id"),
    ({"k1": b"\x00" * 32}, "k2", "active encryption key 'k2'"),
])
def test_keyring_validation(keys: dict[str, bytes], active: str, needle: str) -> None:
    with pytest.raises(EncryptionError, match=needle):
        KeyRing(keys, active)


# ---- tampering ----------------------------------------------------------------------------------

def test_every_flipped_byte_is_detected(tmp_path: Path) -> None:
    data = plain(3 * CHUNK + 100)
    enc = encrypt(tmp_path, data)
    original = enc.read_bytes()
    hsize = header_size(enc)
    # every header byte, and bytes at the start/middle/end (tag) of every chunk
    positions = list(range(hsize))
    for chunk in range(4):
        base = hsize + chunk * (CHUNK + TAG_BYTES)
        end = min(base + CHUNK + TAG_BYTES, len(original))
        positions += [base, (base + end) // 2, end - 1]
    for pos in positions:
        changed = bytearray(original)
        changed[pos] ^= 0x01
        enc.write_bytes(bytes(changed))
        with pytest.raises(DecryptionError):
            decrypt(tmp_path, enc)
    enc.write_bytes(original)
    assert decrypt(tmp_path, enc) == data


def test_a_flipped_byte_is_reported_with_its_chunk(tmp_path: Path) -> None:
    data = plain(3 * CHUNK)
    enc = encrypt(tmp_path, data)
    changed = bytearray(enc.read_bytes())
    changed[header_size(enc) + 2 * (CHUNK + TAG_BYTES) + 10] ^= 0x80  # inside chunk 2
    enc.write_bytes(bytes(changed))
    with DecryptingFile(enc, RING) as f:
        assert f.read(2 * CHUNK) == data[: 2 * CHUNK]  # untouched chunks still read
        with pytest.raises(DecryptionError, match=r"chunk 2 of 3 \(key id 'k1'\)"):
            f.read(10)


@pytest.mark.parametrize("cut", ["last_chunk", "mid_chunk", "header_only", "inside_header",
                                 "one_byte", "appended"])
def test_truncated_or_extended_files_are_detected(tmp_path: Path, cut: str) -> None:
    enc = encrypt(tmp_path, plain(3 * CHUNK + 100))
    data, hsize = enc.read_bytes(), header_size(enc)
    mangled = {
        "last_chunk": data[: hsize + 3 * (CHUNK + TAG_BYTES)],  # ends on a chunk boundary
        "mid_chunk": data[: hsize + CHUNK + 300],
        "header_only": data[:hsize],
        "inside_header": data[: hsize - 5],
        "one_byte": data[:-1],
        "appended": data + b"\x00" * 20,
    }[cut]
    enc.write_bytes(mangled)
    with pytest.raises(DecryptionError):
        decrypt(tmp_path, enc)
    with pytest.raises(DecryptionError):
        with DecryptingFile(enc, RING) as f:
            f.seek(-1, io.SEEK_END)  # a reader jumping to the end must notice too
            f.read()


def test_an_exact_multiple_cut_to_fewer_chunks_is_detected(tmp_path: Path) -> None:
    enc = encrypt(tmp_path, plain(4 * CHUNK))  # every chunk full: the cut looks "regular"
    data, hsize = enc.read_bytes(), header_size(enc)
    enc.write_bytes(data[: hsize + 2 * (CHUNK + TAG_BYTES)])
    with pytest.raises(DecryptionError, match="chunk 1 of 2"):
        decrypt(tmp_path, enc)


def test_reordered_chunks_are_detected(tmp_path: Path) -> None:
    enc = encrypt(tmp_path, plain(4 * CHUNK))
    data, hsize = enc.read_bytes(), header_size(enc)
    sealed = CHUNK + TAG_BYTES
    chunks = [data[hsize + i * sealed : hsize + (i + 1) * sealed] for i in range(4)]
    enc.write_bytes(data[:hsize] + chunks[0] + chunks[2] + chunks[1] + chunks[3])
    with pytest.raises(DecryptionError, match="chunk 1"):
        decrypt(tmp_path, enc)


def test_a_header_from_another_file_is_detected(tmp_path: Path) -> None:
    a = encrypt(tmp_path, plain(2 * CHUNK, 1), name="a")
    b = encrypt(tmp_path, plain(2 * CHUNK, 2), name="b")
    ha = header_size(a)
    (tmp_path / "swapped").write_bytes(a.read_bytes()[:ha] + b.read_bytes()[ha:])
    with pytest.raises(DecryptionError, match="chunk 0"):
        decrypt(tmp_path, tmp_path / "swapped")


def test_a_changed_chunk_size_in_the_header_is_detected(tmp_path: Path) -> None:
    enc = encrypt(tmp_path, plain(4 * CHUNK))
    data = bytearray(enc.read_bytes())
    pos = 8 + 1 + 1 + len("k1")
    data[pos : pos + 4] = struct.pack(">I", 2 * CHUNK)  # a valid but different size
    enc.write_bytes(bytes(data))
    with pytest.raises(DecryptionError):
        decrypt(tmp_path, enc)


# ---- random access -------------------------------------------------------------------------------

def _reader(path: Path) -> functools.partial[bytes]:
    def read(p: Path, start: int, end: int) -> bytes:
        with p.open("rb") as f:
            f.seek(start)
            return f.read(end - start)

    return functools.partial(read, path)


def ranges(size: int, rng: random.Random, count: int = 300) -> list[tuple[int, int]]:
    """Random ranges plus every chunk boundary ±1, empty, whole and past-the-end ranges."""
    out = [(0, 0), (0, size), (size, size + 5), (0, size + 100), (size // 2, size // 2)]
    for boundary in range(0, size + 1, CHUNK):
        for a, b in [(boundary - 1, boundary + 1), (boundary, boundary + CHUNK),
                     (boundary - 1, boundary), (boundary, boundary + 1)]:
            if 0 <= a <= b:
                out.append((a, b))
    for _ in range(count):
        a = rng.randrange(size + 1)
        out.append((a, a + rng.choice([1, 7, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK,
                                        rng.randrange(size + 1)])))
    return out


def test_random_access_reads_equal_the_plaintext_slices(tmp_path: Path) -> None:
    data = plain(10 * CHUNK + 321, seed=5)
    enc = encrypt(tmp_path, data)
    reader = EncryptedReader.open(_reader(enc), enc.stat().st_size, RING)
    assert reader.plain_size == len(data) and reader.key_id == "k1"
    rng = random.Random(1234)
    with DecryptingFile(enc, RING) as f:
        for start, end in ranges(len(data), rng):
            assert reader.read_range(start, end) == data[start:end], (start, end)
            f.seek(start)
            assert f.read(end - start) == data[start:end], (start, end)
            assert f.tell() == max(start, min(end, len(data)))


async def test_async_random_access_through_storage(storage: Storage, tmp_path: Path) -> None:
    """Ranged playback straight from the storage (S3 included) decrypts only what it fetched."""
    data = plain(8 * CHUNK + 77, seed=9)
    enc = encrypt(tmp_path, data)
    await storage.put_file(enc, "rec1/tracks/a.webm")
    fetched: list[tuple[int, int]] = []

    async def fetch(start: int, end: int) -> bytes:
        fetched.append((start, end))
        return await storage.read_range("rec1/tracks/a.webm", start, end)

    reader = await AsyncEncryptedReader.open(fetch, enc.stat().st_size, RING)
    rng = random.Random(99)
    for start, end in ranges(len(data), rng, count=40):
        assert await reader.read_range(start, end) == data[start:end], (start, end)
    fetched.clear()
    assert await reader.read_range(5 * CHUNK + 10, 5 * CHUNK + 20) == \
        data[5 * CHUNK + 10 : 5 * CHUNK + 20]
    (a, b), = fetched  # one request for exactly one sealed chunk
    assert b - a == CHUNK + TAG_BYTES


def test_decrypting_file_seek_and_tell(tmp_path: Path) -> None:
    data = plain(3 * CHUNK + 5)
    with DecryptingFile(encrypt(tmp_path, data), RING) as f:
        assert f.seekable() and f.readable() and not f.writable()
        assert f.seek(-10, io.SEEK_END) == len(data) - 10
        assert f.read() == data[-10:]
        assert f.read(5) == b""
        assert f.seek(CHUNK - 2) == CHUNK - 2
        assert f.seek(4, io.SEEK_CUR) == CHUNK + 2
        assert f.read(3) == data[CHUNK + 2 : CHUNK + 5]
        buf = bytearray(2 * CHUNK)
        f.seek(100)
        assert f.readinto(buf) == 2 * CHUNK and bytes(buf) == data[100 : 100 + 2 * CHUNK]
        with pytest.raises(ValueError):
            f.seek(-1)
        assert io.BufferedReader(f).read(7) == data[100 + 2 * CHUNK : 107 + 2 * CHUNK]
    with pytest.raises(ValueError):
        f.read(1)


# ---- PyAV seeks in an encrypted recording -------------------------------------------------------

FPS, SECONDS = 25, 3


def level(index: int) -> int:
    return 10 + 3 * index  # each frame a different grey: the picture says which frame it is


def make_video(path: Path) -> None:
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.codec_context.gop_size = FPS  # a keyframe every second...
        stream.codec_context.options = {"sc_threshold": "1000000000"}  # ...and only then
        for i in range(FPS * SECONDS):
            frame = av.VideoFrame.from_ndarray(
                np.full((120, 160, 3), level(i), np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def seek_and_decode(source: DecryptingFile | str, target_s: float) -> list[av.VideoFrame]:
    with av.open(source, "r") as container:
        stream = container.streams.video[0]
        assert container.duration is not None
        assert container.duration / 1e6 == pytest.approx(SECONDS, abs=0.1)
        assert stream.time_base is not None
        container.seek(int(target_s / stream.time_base), stream=stream, backward=True)
        frames = []
        for frame in container.decode(stream):
            frames.append(frame)
            if frame.time is not None and frame.time >= target_s - 1e-6:
                break
    return frames


@pytest.mark.parametrize("target_s", [1.6, 2.2])  # frame times (1/25 s)
def test_pyav_seeks_in_an_encrypted_recording(tmp_path: Path, target_s: float) -> None:
    video = tmp_path / "consultation.mp4"
    make_video(video)
    with av.open(str(video)) as plain_container:  # where the keyframes really are
        vs = plain_container.streams.video[0]
        assert vs.time_base is not None
        keyframes = [float(p.pts * vs.time_base) for p in plain_container.demux(vs)
                     if p.is_keyframe and p.pts is not None]
    assert keyframes == pytest.approx([0.0, 1.0, 2.0])
    enc = encrypt(tmp_path, video.read_bytes(), chunk=4096)
    assert b"ftyp" not in enc.read_bytes() and b"moov" not in enc.read_bytes()

    frames = seek_and_decode(DecryptingFile(enc, RING), target_s)
    first, last = frames[0], frames[-1]
    # the seek landed on the keyframe at or before the target (one every second)...
    assert first.key_frame
    assert first.time == pytest.approx(max(k for k in keyframes if k <= target_s + 1e-6))
    # ...and decoding from there reaches a frame exactly at the target, whose picture is the
    # frame recorded at that time
    assert last.time == pytest.approx(target_s, abs=1e-6)
    # the same pixels as the same seek in the unencrypted file
    reference = seek_and_decode(str(video), target_s)
    assert [f.time for f in frames] == [f.time for f in reference]
    for ours, theirs in zip(frames, reference, strict=True):
        assert np.array_equal(ours.to_ndarray(format="gray"), theirs.to_ndarray(format="gray"))
    for frame in (first, last):
        index = round(frame.time * FPS)
        assert frame.to_ndarray(format="gray").mean() == pytest.approx(level(index), abs=3)
