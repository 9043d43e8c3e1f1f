"""DNS-01 through RFC 2136 dynamic updates signed with TSIG (dnspython), with a check that the
TXT record is visible at the authoritative server before the challenge is answered."""

from __future__ import annotations

import asyncio
import time

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update

from expressway_certd.renewers.ca.acme_config import RFC2136Config
from expressway_certd.renewers.ca.base import CARequestError, ConnectorBase, Presentation

_RCODE_FIX = {
    dns.rcode.NOTAUTH: "the server does not accept the TSIG key: check tsig_key, tsig_secret "
    "and tsig_algorithm match the key in named.conf",
    dns.rcode.REFUSED: "the server refuses updates with this key for this zone: add "
    "'update-policy' or 'allow-update { key NAME; }' to the zone",
    dns.rcode.NOTZONE: "the name is not inside the zone: check zone",
    dns.rcode.SERVFAIL: "the server failed the update; check its log (journal file writable?)",
}


class RFC2136Solver:
    """Writes `_acme-challenge` TXT records to the zone's primary server."""

    challenge_type = "dns-01"

    def __init__(self, owner: ConnectorBase, config: RFC2136Config) -> None:
        self._owner = owner
        self.config = config
        self._keyring = {
            dns.name.from_text(config.tsig_key): dns.tsig.Key(
                config.tsig_key, config.tsig_secret.reveal(), config.tsig_algorithm
            )
        }
        self._zones: dict[str, dns.name.Name] = {}

    def __repr__(self) -> str:
        return f"RFC2136Solver(server={self.config.server}:{self.config.port}, key={self.config.tsig_key!r})"

    def _error(self, step: str, problem: str, fix: str, reason: str) -> CARequestError:
        return self._owner.error(f"dns-01 {step}", problem, fix, reason=reason, retryable=True)

    async def _zone_of(self, name: dns.name.Name) -> dns.name.Name:
        if self.config.zone is not None:
            return dns.name.from_text(self.config.zone)
        key = name.to_text()
        if key not in self._zones:
            query = dns.message.make_query(name, dns.rdatatype.SOA)
            response = await self._query(query, "zone lookup")
            for rrset in (*response.answer, *response.authority):
                if rrset.rdtype == dns.rdatatype.SOA:
                    self._zones[key] = rrset.name
                    break
            else:
                raise self._error(
                    "zone lookup",
                    f"{self.config.server} is not authoritative for {name}",
                    "set [rfc2136] zone, or point server at the zone's primary",
                    "dns_zone",
                )
        return self._zones[key]

    async def _query(self, message: dns.message.Message, step: str) -> dns.message.Message:
        try:
            return await dns.asyncquery.tcp(
                message, self.config.server, port=self.config.port, timeout=10
            )
        except dns.tsig.PeerError as exc:
            raise self._error(
                step, f"TSIG rejected ({exc})", _RCODE_FIX[dns.rcode.NOTAUTH], "dns_tsig"
            ) from None
        except (OSError, dns.exception.DNSException) as exc:
            raise self._error(
                step,
                f"DNS server {self.config.server}:{self.config.port} did not answer ({exc})",
                "check [rfc2136] server and that TCP/53 is open to it",
                "dns_unreachable",
            ) from None

    async def _update(self, item: Presentation, add: bool) -> None:
        name = dns.name.from_text(item.txt_name)
        zone = await self._zone_of(name)
        update = dns.update.UpdateMessage(
            zone,
            keyring=self._keyring,
            keyname=dns.name.from_text(self.config.tsig_key),
            keyalgorithm=self.config.tsig_algorithm,
        )
        relative = name.relativize(zone)
        value = f'"{item.txt_value}"'
        if add:
            update.add(relative, self.config.ttl, dns.rdatatype.TXT, value)
        else:
            update.delete(relative, dns.rdatatype.TXT, value)
        step = "update" if add else "cleanup"
        response = await self._query(update, step)
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            raise self._error(
                step,
                f"update of {name} refused ({dns.rcode.to_text(rcode)})",
                _RCODE_FIX.get(rcode, "check the DNS server's log"),
                "dns_update",
            )

    async def _visible(self, item: Presentation) -> bool:
        query = dns.message.make_query(item.txt_name, dns.rdatatype.TXT)
        response = await self._query(query, "propagation check")
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                for rdata in rrset:
                    if b"".join(rdata.strings).decode() == item.txt_value:
                        return True
        return False

    async def present(self, item: Presentation) -> None:
        if not await self._visible(item):
            await self._update(item, add=True)
        deadline = time.monotonic() + self.config.propagation_timeout.total_seconds()
        while not await self._visible(item):
            if time.monotonic() > deadline:
                raise self._error(
                    "propagation check",
                    f"TXT {item.txt_name} is not visible at {self.config.server} after the update",
                    "check the zone is served by that server; raise propagation_timeout",
                    "dns_propagation",
                )
            await asyncio.sleep(0.5)

    async def cleanup(self, item: Presentation) -> None:
        await self._update(item, add=False)

    async def aclose(self) -> None:
        return None
