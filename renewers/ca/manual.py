"""The `manual` CA kind: for sites that sign through a web portal. The CSR is written where the
operator can take it (a file, the StageWaiting notification, `status`); the renewal waits until
the operator runs `expressway-certd provide ID --cert F [--chain F]`, then validation,
trust, install, restart and verify continue by themselves."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509

from expressway_certd.monitor.durations import utcnow
from expressway_certd.monitor.facts import EKU_CONFIG_NAMES
from expressway_certd.renewers.ca.base import (
    CACapabilities,
    CheckResult,
    ConnectorBase,
    Issued,
    Pending,
    RenewalWindow,
    csr_pem,
    order_chain,
)
from expressway_certd.renewers.ca.manual_config import ManualConfig


class ManualConnector(ConnectorBase):
    """Writes CSRs to `csr_dir`; never issues by itself (`provide` stores the certificate)."""

    def __init__(self, config: ManualConfig, *, data_dir: Path) -> None:
        super().__init__(config.name, "manual")
        self.config = config
        self.csr_dir = config.csr_dir or data_dir / "manual" / config.name

    def capabilities(self) -> CACapabilities:
        ekus = (
            None
            if self.config.ekus is None
            else frozenset(EKU_CONFIG_NAMES[e] for e in self.config.ekus)
        )
        return CACapabilities("manual", None, ekus, "the portal's template decides the EKUs")

    def _pending(self, handle: dict[str, Any]) -> Pending:
        return Pending(
            handle,
            utcnow() + self.config.poll,
            f"waiting for an operator: get {handle['csr_file']} signed",
            awaits_provide=True,
        )

    async def submit(self, csr: x509.CertificateSigningRequest) -> Issued | Pending:
        pem = csr_pem(csr)
        name = hashlib.sha256(pem).hexdigest()[:16]
        with self.measure("submit"):
            self.csr_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
            path = self.csr_dir / f"{name}.csr"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(pem)
            os.replace(tmp, path)
        handle = self.new_handle(csr_file=str(path), csr=pem.decode())
        return self.outcome("submit", self._pending(handle))

    async def poll(self, handle: Mapping[str, Any]) -> Issued | Pending:
        self.check_handle(handle, "csr_file")
        return self._pending(dict(handle))

    def accept(
        self,
        handle: Mapping[str, Any],
        leaf: x509.Certificate,
        chain: tuple[x509.Certificate, ...] | list[x509.Certificate] = (),
    ) -> Issued:
        """The certificate an operator got signed for this handle's CSR: refused when it is
        for another key, else compared with the CSR like any CA's answer (`Issued.dropped`)."""
        self.check_handle(handle, "csr_file")
        try:
            pem = handle.get("csr") or Path(str(handle["csr_file"])).read_text()
            csr = x509.load_pem_x509_csr(str(pem).encode())
        except (OSError, ValueError) as exc:
            raise self.error(
                "provide",
                f"the CSR of this request cannot be read ({exc})",
                "submit the CSR again",
                reason="bad_handle",
            ) from None
        self.leaf_for(
            "provide", [leaf], csr, f"get {handle['csr_file']} signed and hand in that certificate"
        )
        return self.outcome("provide", Issued(leaf, order_chain(leaf, list(chain))), csr)

    async def ca_chain(self) -> tuple[x509.Certificate, ...]:
        if self.config.chain is None:
            return ()
        return tuple(x509.load_pem_x509_certificates(self.config.chain.read_bytes()))

    async def renewal_window(self, leaf: x509.Certificate) -> RenewalWindow | None:
        return None

    async def check(self) -> list[CheckResult]:
        chain = await self.ca_chain()
        return [
            CheckResult("csr_dir", True, f"CSRs are written to {self.csr_dir}"),
            CheckResult(
                "chain",
                bool(chain),
                f"{len(chain)} CA certificates from {self.config.chain}"
                if chain
                else "no chain configured: give --chain to 'provide' when the CA changes",
            ),
        ]

    async def aclose(self) -> None:
        return None
