"""TURN tests' helpers: coturn started on free ports, a test CA, and a child network namespace
whose firewall drops every UDP packet (tests/test_turn.py).

The child namespace is made inside the tests' own private one (scripts/run-tests.sh): a holder
process (``unshare --net sleep``), a veth pair into it on a private /30, and nftables rules in
it. Chromium runs in it through a wrapper script (``nsenter --net=/proc/PID/ns/net chromium``).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.browser import CHROMIUM

TURNSERVER = "/usr/bin/turnserver"
HOST_IP = "10.213.0.1"  # this side of the veth pair: the service and coturn listen here too
CHILD_IP = "10.213.0.2"  # the browser's side, in the child namespace
REALM = "huizhen.test"


# ---- a test CA ----------------------------------------------------------------------------------

@dataclass
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def make(cls, name: str) -> Ca:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False),
                    critical=True)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, folder: Path, name: str, ips: list[str]) -> tuple[Path, Path]:
        """A server certificate for ``ips``; returns (cert file, key file)."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ips[0])]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))
        cert_file, key_file = folder / f"{name}.crt.pem", folder / f"{name}.key.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + self.pem())
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_file, key_file


def nss_home(folder: Path, ca: Ca) -> Path:
    """A HOME whose NSS database (what Chromium on Linux trusts besides its root store)
    trusts ``ca`` for TLS servers."""
    db = folder / ".pki" / "nssdb"
    db.mkdir(parents=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{db}", "--empty-password"], check=True)
    ca_file = folder / "test-ca.pem"
    ca_file.write_bytes(ca.pem())
    subprocess.run(["certutil", "-A", "-d", f"sql:{db}", "-n", "huizhen test CA", "-t", "C,,",
                    "-i", str(ca_file)], check=True)
    return folder


# ---- coturn -------------------------------------------------------------------------------------

def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive free UDP ports (for coturn's relay range)."""
    import socket
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            first = int(s.getsockname()[1])
        if first + count >= 65000:
            continue
        ok = True
        for port in range(first, first + count):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return first
    raise RuntimeError("no free UDP port range for coturn's relays")


@dataclass
class Coturn:
    """One coturn (``turnserver``) with use-auth-secret, as docs/turn.md configures it."""

    folder: Path
    secret: str
    port: int
    tls_port: int
    cert: tuple[Path, Path]
    listen: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    verbose: bool = False  # log every connection
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.folder / "turnserver.log"

    def config(self) -> str:
        first = free_port_range(40)
        lines = [f"listening-ip={ip}" for ip in self.listen] + [
            f"listening-port={self.port}", f"tls-listening-port={self.tls_port}",
            "relay-ip=127.0.0.1", f"min-port={first}", f"max-port={first + 39}",
            "fingerprint", "use-auth-secret", f"static-auth-secret={self.secret}",
            f"realm={REALM}", f"cert={self.cert[0]}", f"pkey={self.cert[1]}",
            # no-rfc5780: with two listening addresses coturn would also bind each port + 1
            # (its NAT discovery's alternative ports), which no test picked as free
            "no-rfc5780", "no-cli", "no-multicast-peers", "allow-loopback-peers",
            "no-software-attribute",
            f"pidfile={self.folder / 'turnserver.pid'}", f"userdb={self.folder / 'turndb'}",
            f"log-file={self.log_file}", "simple-log", "no-stdout-log",
        ] + (["verbose"] if self.verbose else [])
        return "\n".join(lines) + "\n"

    def spawn(self) -> subprocess.Popen[bytes]:
        self.folder.mkdir(parents=True, exist_ok=True)
        conf = self.folder / "turnserver.conf"
        conf.write_text(self.config(), encoding="utf-8")
        return subprocess.Popen([TURNSERVER, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT, start_new_session=True)

    async def start(self) -> Coturn:
        self.proc = self.spawn()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"turnserver exited: {self.log()}")
            if await _accepts(self.listen[-1], self.tls_port) and await _accepts(
                    self.listen[-1], self.port):
                return self
            await asyncio.sleep(0.05)
        raise RuntimeError(f"turnserver did not listen in 10 s: {self.log()}")

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def _accepts(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    return True


# ---- a child network namespace with a firewall --------------------------------------------------

class ChildNet:
    """A network namespace joined to ours by a veth pair (HOST_IP here, CHILD_IP there)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.holder: subprocess.Popen[bytes] | None = None

    @property
    def ns(self) -> str:
        assert self.holder is not None
        return f"/proc/{self.holder.pid}/ns/net"

    def run(self, *cmd: str, input: str | None = None) -> None:
        subprocess.run(["nsenter", f"--net={self.ns}", *cmd], check=True,
                       input=input.encode() if input is not None else None)

    def start(self) -> ChildNet:
        try:
            return self._start()
        except (OSError, subprocess.CalledProcessError, RuntimeError) as exc:
            self.stop()
            raise RuntimeError(
                "cannot make the test's child network namespace (unshare, veth, nftables): run "
                "the tests as root or with unprivileged user namespaces, as scripts/run-tests.sh "
                f"does, and install nftables (scripts/install-system-deps.sh test): {exc}"
            ) from exc

    def _start(self) -> ChildNet:
        self.holder = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
        own = os.readlink(f"/proc/{os.getpid()}/ns/net")
        deadline = time.monotonic() + 5
        while os.readlink(self.ns) == own:  # unshare has not run yet
            if time.monotonic() > deadline:
                raise RuntimeError("the child network namespace was not made")
            time.sleep(0.01)
        subprocess.run(["ip", "link", "add", "hzturn0", "type", "veth", "peer", "name",
                        "hzturn1", "netns", str(self.holder.pid)], check=True)
        subprocess.run(["ip", "addr", "add", f"{HOST_IP}/30", "dev", "hzturn0"], check=True)
        subprocess.run(["ip", "link", "set", "hzturn0", "up"], check=True)
        self.run("ip", "addr", "add", f"{CHILD_IP}/30", "dev", "hzturn1")
        self.run("ip", "link", "set", "hzturn1", "up")
        self.run("ip", "link", "set", "lo", "up")
        return self

    def firewall(self, tcp_ports: list[int], udp: bool = False) -> None:
        """Drop every UDP packet (unless ``udp``) and every TCP packet not to ``tcp_ports``,
        in the child namespace, both ways."""
        ports = ", ".join(str(p) for p in tcp_ports)
        no_udp = "" if udp else "meta l4proto udp drop"
        self.run("nft", "-f", "-", input=f"""
table inet hzfw
delete table inet hzfw
table inet hzfw {{
  chain out {{
    type filter hook output priority 0; policy accept;
    {no_udp}
    meta l4proto tcp tcp dport != {{ {ports} }} drop
  }}
  chain in {{
    type filter hook input priority 0; policy accept;
    {no_udp}
    meta l4proto tcp tcp sport != {{ {ports} }} drop
  }}
}}
""")

    def chromium_wrapper(self) -> Path:
        """An executable that starts Debian chromium inside the child namespace."""
        path = self.folder / "chromium-in-netns"
        path.write_text(f'#!/bin/sh\nexec nsenter --net={self.ns} {CHROMIUM} "$@"\n',
                        encoding="utf-8")
        path.chmod(0o755)
        return path

    def stop(self) -> None:
        if self.holder is not None and self.holder.poll() is None:
            self.holder.kill()  # the veth pair goes with its namespace
            self.holder.wait()
        with_ip = shutil.which("ip")
        if with_ip:
            subprocess.run([with_ip, "link", "del", "hzturn0"], stderr=subprocess.DEVNULL,
                           check=False)
