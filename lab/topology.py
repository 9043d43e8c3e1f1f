"""The whole lab in one object: an Expressway-C and an Expressway-E linked by a traversal zone,
and a Unified CM node behind the C (secure zone), all issued from one lab CA.

Usage (demo, tests, `expressway-certd lab`)::

    async with Lab(Path("/tmp/lab"), version="X15.4", restart_seconds=2.0) as lab:
        lab.expressway_c, lab.expressway_e   # lab.expressway.ExpresswaySim
        lab.cucm                             # lab.cucm.CucmSim
        lab.ca                               # lab.pki.CA that issued every initial cert
        lab.traversal_zone, lab.secure_zone  # lab.zones.Zone, .status() -> (state, reason)
        config = lab.write_config(Path("/tmp/lab/certd.toml"))  # a config for the daemon/CLI
        print(lab.describe())                # addresses and credentials

`Lab(workdir, *, version="X15.4", c_version=None, e_version=None, restart_seconds=2.0,
service_restart_seconds=1.0, port_base=None, host="127.0.0.1", ca=None, cert_days=365)`:
`port_base` gives fixed ports (C from port_base, E from port_base+10, Unified CM from
port_base+20), else random free ports; `cert_days` is the lifetime left on the initial server
certificates (short to make the monitor renew them); `ca` lets the caller share a CA. Imports nothing from monitor/, renewers/ or alerts/.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from lab.cucm import CucmSim
from lab.expressway import ExpresswaySim
from lab.pki import CA, cert_pem
from lab.zones import Zone, secure_zone, traversal_zone

C_SERVICES = ("https", "sip-tls")
E_SERVICES = ("https", "sip-tls", "traversal", "mra", "xmpp")


class Lab:
    """A linked Expressway-C / Expressway-E pair and a Unified CM node on loopback."""

    def __init__(
        self,
        workdir: Path,
        *,
        version: str = "X15.4",
        c_version: str | None = None,
        e_version: str | None = None,
        restart_seconds: float = 2.0,
        service_restart_seconds: float = 1.0,
        port_base: int | None = None,
        host: str = "127.0.0.1",
        ca: CA | None = None,
        cert_days: float = 365,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca = ca or CA.create("expressway-certd Lab Root CA")

        def port(offset: int) -> int:
            return 0 if port_base is None else port_base + offset

        self.expressway_c = ExpresswaySim(
            "expe-c1",
            role="c",
            version=c_version or version,
            ca=self.ca,
            sans=["expe-c1.lab.example", "expressway-c.lab.example"],
            listener_modes=("tls",) * len(C_SERVICES),
            listener_ports=[port(1 + i) for i in range(len(C_SERVICES))],
            host=host,
            api_port=port(0),
            ssh_port=port(9),
            restart_seconds=restart_seconds,
            cert_days=cert_days,
            workdir=self.workdir / "expe-c1",
        )
        self.expressway_e = ExpresswaySim(
            "expe-e1",
            role="e",
            version=e_version or version,
            ca=self.ca,
            sans=["expe-e1.lab.example", "collab-edge.lab.example"],
            listener_modes=tuple("xmpp" if s == "xmpp" else "tls" for s in E_SERVICES),
            listener_ports=[port(11 + i) for i in range(len(E_SERVICES))],
            host=host,
            api_port=port(10),
            ssh_port=port(19),
            restart_seconds=restart_seconds,
            cert_days=cert_days,
            workdir=self.workdir / "expe-e1",
        )
        self.cucm = CucmSim(
            "cucm1",
            ca=self.ca,
            host=host,
            api_port=port(20),
            soap_port=port(21),
            ssh_port=port(22),
            service_restart_seconds=service_restart_seconds,
            workdir=self.workdir / "cucm1",
        )
        self.traversal_zone: Zone = traversal_zone(
            "UCTraversal", self.expressway_c, self.expressway_e
        )
        self.secure_zone: Zone = secure_zone("CUCMNeighbor", self.expressway_c, self.cucm)
        self.expressway_c.add_zone(self.traversal_zone, str(self.expressway_e.fqdn))
        self.expressway_e.add_zone(self.traversal_zone, str(self.expressway_c.fqdn))
        self.expressway_c.add_zone(self.secure_zone, str(self.cucm.fqdn))

    async def start(self) -> Lab:
        await self.expressway_c.start()
        await self.expressway_e.start()
        await self.cucm.start()
        return self

    async def stop(self) -> None:
        for sim in (self.cucm, self.expressway_e, self.expressway_c):
            await sim.stop()

    async def __aenter__(self) -> Lab:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def expressways(self) -> list[ExpresswaySim]:
        return [self.expressway_c, self.expressway_e]

    @property
    def ca_bundle_path(self) -> Path:
        """The lab root CA as PEM: verifies every API and every initial server certificate."""
        path = self.workdir / "lab-ca.pem"
        path.write_bytes(cert_pem(self.ca.root().cert))
        return path

    @property
    def known_hosts_path(self) -> Path:
        """known_hosts pinning the SSH host keys of all three simulators."""
        path = self.workdir / "known_hosts"
        lines = []
        for sim in (self.expressway_c, self.expressway_e, self.cucm):
            pinned = sim.ssh_known_hosts_path
            if pinned is not None:
                lines.append(pinned.read_text(encoding="utf-8"))
        path.write_text("".join(lines), encoding="utf-8")
        return path

    def _secret_file(self, name: str, value: str) -> Path:
        path = self.workdir / f"{name}.password"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(value + "\n")
        os.chmod(path, 0o600)
        return path

    def write_config(self, path: Path) -> Path:
        """Write an expressway-certd TOML config for the running lab (passwords go to 0600
        files next to it, referenced as `file:`). Valid while the lab keeps its ports."""
        c, e, ucm = self.expressway_c, self.expressway_e, self.cucm
        bundle = self.ca_bundle_path
        known_hosts = self.known_hosts_path
        lines = [
            "# expressway-certd config for the lab (`expressway-certd lab`); valid while it runs.",
            "",
            "[daemon]",
            f'state = "{self.workdir / "state.db"}"',
            f'data_dir = "{self.workdir / "data"}"',
            f'trust_bundle = "{bundle}"',
            "",
        ]
        for sim, services, extra in (
            (c, C_SERVICES, [f'traversal_peer = "{e.name}"', f'unified_cm = "{ucm.name}"']),
            (e, E_SERVICES, [f'traversal_peer = "{c.name}"']),
        ):
            endpoints = []
            for address, service in zip(sim.listeners, services, strict=True):
                host, _, port = address.rpartition(":")
                starttls = ', starttls = "xmpp"' if service == "xmpp" else ""
                endpoints.append(
                    f'  {{ host = "{host}", port = {port}, service = "{service}"{starttls} }},'
                )
            lines += [
                "[[expressway]]",
                f'name = "{sim.name}"',
                f'address = "{sim.host}"',
                f'role = "{sim.role}"',
                f'version = "{sim.version}"',
                f'username = "{sim.username}"',
                f'password = "file:{self._secret_file(sim.name, sim.password)}"',
                f"api_port = {sim.api_port}",
                f'api_ca_file = "{bundle}"',
                f"ssh_port = {sim.ssh_port}",
                f'ssh_known_hosts = "{known_hosts}"',
                *extra,
                "endpoints = [",
                *endpoints,
                "]",
                "",
            ]
        lines += [
            "[[unified_cm]]",
            f'name = "{ucm.name}"',
            f'nodes = ["{ucm.host}"]',
            f'username = "{ucm.username}"',
            f'password = "file:{self._secret_file(ucm.name, ucm.password)}"',
            f"api_port = {ucm.api_port}",
            f"soap_port = {ucm.soap_port}",
            f"ssh_port = {ucm.ssh_port}",
            f'api_ca_file = "{bundle}"',
            f'ssh_known_hosts = "{known_hosts}"',
            "",
        ]
        path.write_text("\n".join(lines), encoding="utf-8")
        return path

    def describe(self) -> str:
        """Addresses, credentials and zone states, for a human."""
        out = [f"Lab CA bundle: {self.ca_bundle_path}", f"SSH known_hosts: {self.known_hosts_path}"]
        for sim, services in ((self.expressway_c, C_SERVICES), (self.expressway_e, E_SERVICES)):
            out.append(
                f"{sim.name} (Expressway-{sim.role.upper()} {sim.version}, {sim.fqdn})\n"
                f"  API      {sim.api_url}  user {sim.username}  password {sim.password}\n"
                f"  SSH      {sim.host}:{sim.ssh_port}\n"
                + "".join(
                    f"  TLS      {address}  ({service})\n"
                    for address, service in zip(sim.listeners, services, strict=True)
                )
            )
        ucm = self.cucm
        out.append(
            f"{ucm.name} (Unified CM {ucm.version}, {ucm.fqdn})\n"
            f"  certmgr  {ucm.api_url}  user {ucm.username}  password {ucm.password}\n"
            f"  SOAP     {ucm.soap_url}\n"
            f"  SSH      {ucm.host}:{ucm.ssh_port}  (admin: prompt)\n"
        )
        for zone in (self.traversal_zone, self.secure_zone):
            state, reason = zone.status()
            out.append(f"zone {zone.name}: {state}{f' ({reason})' if reason else ''}")
        return "\n".join(out)
