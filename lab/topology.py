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

Signature::

    Lab(workdir, *, version="X15.4", c_version=None, e_version=None, restart_seconds=2.0,
        service_restart_seconds=1.0, port_base=None, host="127.0.0.1", ca=None,
        cert_days=365, c_peers=1, domain="lab.example", ..., csr_keys=None)

- `port_base`: fixed ports (C from port_base, E from +10, Unified CM from +20, further C
  peers from +30, +40, ...); default random free ports.
- `c_peers`: the C as a cluster of that many peers (expe-c1, expe-c2, ...; `expressway_c` is
  the first, all are in `expressway_c_peers`, each with its own key and the cluster name
  in its SANs; zones per peer in `traversal_zones` / `secure_zones`).
- `cert_days`: lifetime left on the initial server certificates (short to make the monitor
  renew them); `ca`: share a CA with the caller.
- `domain`: the DNS domain of every box name (expe-c1.DOMAIN, the cluster name
  expressway-c.DOMAIN, expe-e1.DOMAIN, collab-edge.DOMAIN, cucm1.DOMAIN), e.g. a zone a test
  DNS server answers for ACME DNS-01.

Imports nothing from monitor/, renewers/ or alerts/.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from expressway_certd_lab.cucm import CucmSim
from expressway_certd_lab.expressway import ExpresswaySim
from expressway_certd_lab.pki import CA, PrivateKey, cert_pem
from expressway_certd_lab.zones import Zone, secure_zone, traversal_zone

C_SERVICES = ("https", "sip-tls")
C_CLUSTER = "expressway-c.lab.example"  # the cluster name with the default domain
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
        c_peers: int = 1,
        domain: str = "lab.example",
        client_cert_days: float | None = None,
        e_acme_enabled: bool = False,
        e_server_eku_upload: bool = False,
        cucm_deactivated: tuple[str, ...] = (),
        cucm_webapp_deploy_seconds: float = 0.0,
        cucm_nodes: int = 1,
        csr_keys: Callable[[int], PrivateKey] | None = None,
    ) -> None:
        """`client_cert_days`: on X15.5 C peers, the client store holds the server
        certificate from before the last renewal (what the upgrade copied), expiring in that
        many days. `e_acme_enabled`, `e_server_eku_upload`: the E's own ACME scheduler and its
        X15.4 EnableServerEkuUpload. `cucm_deactivated`, `cucm_webapp_deploy_seconds`: see
        lab.cucm.CucmSim. `cucm_nodes`: the Unified CM as a cluster of that many nodes,
        publisher first (`cucm` is the publisher, all are in `cucm_nodes`): cucm2 listens on
        127.0.0.2 with the publisher's ports, cucm3 on 127.0.0.3 ..., one password, and the
        nodes share `restart_log`. `csr_keys` (test-only): where the Expressways' CSR keys
        come from (see lab.expressway.ExpresswaySim.csr_keys); default a fresh key per CSR."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca = ca or CA.create("expressway-certd Lab Root CA")

        def port(offset: int) -> int:
            return 0 if port_base is None else port_base + offset

        if c_peers < 1:
            raise ValueError("c_peers must be at least 1")
        self.domain = domain
        self.cluster_fqdn = f"expressway-c.{domain}"
        c_fqdns = [f"expe-c{i + 1}.{domain}" for i in range(c_peers)]
        self.expressway_c_peers: list[ExpresswaySim] = []
        for i, fqdn in enumerate(c_fqdns):
            base = 0 if i == 0 else 30 + 10 * (i - 1)
            self.expressway_c_peers.append(
                ExpresswaySim(
                    fqdn.split(".")[0],
                    role="c",
                    version=c_version or version,
                    ca=self.ca,
                    fqdn=fqdn,
                    sans=[fqdn, self.cluster_fqdn],
                    listener_modes=("tls",) * len(C_SERVICES),
                    listener_ports=[port(base + 1 + j) for j in range(len(C_SERVICES))],
                    host=host,
                    api_port=port(base),
                    ssh_port=port(base + 9),
                    restart_seconds=restart_seconds,
                    cert_days=cert_days,
                    peers=[f for f in c_fqdns if f != fqdn],
                    workdir=self.workdir / fqdn.split(".")[0],
                    csr_keys=csr_keys,
                )
            )
        self.expressway_c = self.expressway_c_peers[0]
        self.expressway_e = ExpresswaySim(
            "expe-e1",
            role="e",
            version=e_version or version,
            ca=self.ca,
            fqdn=f"expe-e1.{domain}",
            sans=[f"expe-e1.{domain}", f"collab-edge.{domain}"],
            listener_modes=tuple("xmpp" if s == "xmpp" else "tls" for s in E_SERVICES),
            listener_ports=[port(11 + i) for i in range(len(E_SERVICES))],
            host=host,
            api_port=port(10),
            ssh_port=port(19),
            restart_seconds=restart_seconds,
            cert_days=cert_days,
            acme_enabled=e_acme_enabled,
            server_eku_upload=e_server_eku_upload,
            workdir=self.workdir / "expe-e1",
            csr_keys=csr_keys,
        )
        if client_cert_days is not None:
            for c in self.expressway_c_peers:
                if c.client is not None:
                    old, old_key = self.ca.issue(
                        str(c.fqdn), [str(c.fqdn), self.cluster_fqdn], days=client_cert_days
                    )
                    assert old_key is not None
                    c.install_client_now(old, old_key)
        self.cucm = CucmSim(
            "cucm1",
            ca=self.ca,
            fqdn=f"cucm1.{domain}",
            host=host,
            api_port=port(20),
            soap_port=port(21),
            ssh_port=port(22),
            sip_tls_port=port(23),
            service_restart_seconds=service_restart_seconds,
            webapp_deploy_seconds=cucm_webapp_deploy_seconds,
            deactivated=cucm_deactivated,
            workdir=self.workdir / "cucm1",
        )
        if cucm_nodes < 1:
            raise ValueError("cucm_nodes must be at least 1")
        if cucm_nodes > 1 and host != "127.0.0.1":
            raise ValueError("a Unified CM cluster in the lab needs host 127.0.0.1")
        self.cucm_nodes: list[CucmSim] = [self.cucm]
        for i in range(2, cucm_nodes + 1):
            self.cucm_nodes.append(
                CucmSim(
                    f"cucm{i}",
                    ca=self.ca,
                    fqdn=f"cucm{i}.{domain}",
                    host=f"127.0.0.{i}",
                    password=self.cucm.password,
                    service_restart_seconds=service_restart_seconds,
                    webapp_deploy_seconds=cucm_webapp_deploy_seconds,
                    deactivated=cucm_deactivated,
                    restart_log=self.cucm.restart_log,
                    workdir=self.workdir / f"cucm{i}",
                )
            )
        # One connection per C peer; the E reports them as one zone (Failed if any fails).
        self.traversal_zones: list[Zone] = []
        self.secure_zones: list[Zone] = []
        for c in self.expressway_c_peers:
            t_zone = traversal_zone("UCTraversal", c, self.expressway_e)
            s_zone = secure_zone("CUCMNeighbor", c, self.cucm)
            c.add_zone(t_zone, str(self.expressway_e.fqdn))
            self.expressway_e.add_zone(t_zone, str(c.fqdn))
            c.add_zone(s_zone, str(self.cucm.fqdn))
            self.traversal_zones.append(t_zone)
            self.secure_zones.append(s_zone)
        self.traversal_zone = self.traversal_zones[0]
        self.secure_zone = self.secure_zones[0]

    async def start(self) -> Lab:
        for sim in self.expressways:
            await sim.start()
        await self.cucm.start()
        for node in self.cucm_nodes[1:]:
            # One port set for the cluster, as the [[unified_cm]] entry has.
            node.api_port, node.soap_port = self.cucm.api_port, self.cucm.soap_port
            node.ssh_port = self.cucm.ssh_port
            node.sip_tls_port = self.cucm.sip_tls_port
            await node.start()
        return self

    async def stop(self) -> None:
        for node in reversed(self.cucm_nodes):
            await node.stop()
        for sim in reversed(self.expressways):
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
        """Every Expressway simulator: the C peers, then the E."""
        return [*self.expressway_c_peers, self.expressway_e]

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
        for sim in (*self.expressways, *self.cucm_nodes):
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
        e, ucm = self.expressway_e, self.cucm
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
        c_extra = [
            f'cluster = "{self.cluster_fqdn}"',
            f'traversal_peer = "{e.name}"',
            f'unified_cm = "{ucm.name}"',
        ]
        entries = [(c, C_SERVICES, c_extra) for c in self.expressway_c_peers]
        entries.append((e, E_SERVICES, [f'traversal_peer = "{self.expressway_c.name}"']))
        for sim, services, extra in entries:
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
            "nodes = [" + ", ".join(f'"{node.host}"' for node in self.cucm_nodes) + "]",
            f'username = "{ucm.username}"',
            f'password = "file:{self._secret_file(ucm.name, ucm.password)}"',
            f"api_port = {ucm.api_port}",
            f"soap_port = {ucm.soap_port}",
            f"sip_tls_port = {ucm.sip_tls_port}",
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
        for sim in self.expressways:
            services = E_SERVICES if sim.role == "e" else C_SERVICES
            out.append(
                f"{sim.name} (Expressway-{sim.role.upper()} {sim.version}, {sim.fqdn})\n"
                f"  API      {sim.api_url}  user {sim.username}  password {sim.password}\n"
                f"  SSH      {sim.host}:{sim.ssh_port}\n"
                + "".join(
                    f"  TLS      {address}  ({service})\n"
                    for address, service in zip(sim.listeners, services, strict=True)
                )
            )
        for i, ucm in enumerate(self.cucm_nodes):
            role = "publisher" if i == 0 else "subscriber"
            role = f", {role}" if len(self.cucm_nodes) > 1 else ""
            out.append(
                f"{ucm.name} (Unified CM {ucm.version}{role}, {ucm.fqdn})\n"
                f"  certmgr  {ucm.api_url}  user {ucm.username}  password {ucm.password}\n"
                f"  SOAP     {ucm.soap_url}\n"
                f"  SIP TLS  {ucm.host}:{ucm.sip_tls_port}  (CallManager certificate)\n"
                f"  SSH      {ucm.host}:{ucm.ssh_port}  (admin: prompt)\n"
            )
        for zone in (*self.traversal_zones, *self.secure_zones):
            state, reason = zone.status()
            where = f"{zone.client.name} -> {zone.server.name}"
            out.append(f"zone {zone.name} ({where}): {state}{f' ({reason})' if reason else ''}")
        return "\n".join(out)
