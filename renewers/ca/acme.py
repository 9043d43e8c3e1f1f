"""ACME connector (RFC 8555, ARI RFC 9773) on the `acme` library, run in a worker thread.

The account key is created once under data_dir/acme/<ca>/ (0600) and reused; EAB when the
CA wants it. An order is submitted once; its URL (and the CSR, for finalize) is the handle, so
a later process resumes it by URL. Challenges are answered by a solver: RFC 2136 (dns01.py),
a hook command (hook.py) or the HTTP-01 responder (http01.py). badNonce is retried, rate
limits and Retry-After become Pending with the CA's time.

Account recovery: when the CA answers `accountDoesNotExist` (a reset CA forgot the account),
or `unauthorized` and the account URL then says deactivated/revoked or unknown, the connector
registers again (the same key; a new key when the CA refuses the old one), saves the account
(0600), publishes `AcmeAccountRecreated` and re-creates the order in progress with the same
CSR: an order belongs to the account that made it, so the old one cannot be continued.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, TypeVar

import requests
from acme import challenges, client, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from expressway_certd.monitor import __version__
from expressway_certd.monitor.durations import utcnow
from expressway_certd.monitor.events import AcmeAccountRecreated, Event
from expressway_certd.monitor.facts import SERVER_AUTH
from expressway_certd.renewers.ca.acme_config import ACMEConfig
from expressway_certd.renewers.ca.base import (
    CACapabilities,
    CARequestError,
    ChallengeSolver,
    CheckResult,
    ConnectorBase,
    Issued,
    Pending,
    Presentation,
    RenewalWindow,
    csr_pem,
    load_pem_certs,
    log,
    order_chain,
    parse_retry_after,
    retry_at,
    write_private,
)

T = TypeVar("T")
BAD_NONCE_RETRIES = 8
# Public profiles known to issue serverAuth only (Let's Encrypt "classic"/"tlsserver" after
# the clientAuth sunset); other profiles: the issued certificate tells.
SERVER_ONLY_PROFILES = frozenset({"tlsserver", "shortlived", "classic"})
DEFAULT_POLL = 2.0
RATE_LIMIT_WAIT = 3600.0  # when a rateLimited answer names no Retry-After
# Account states after which the CA refuses every request signed with the account's key.
DEAD_ACCOUNT = frozenset({"deactivated", "revoked"})


class _Network(client.ClientNetwork):
    """ClientNetwork that remembers the last Retry-After header (for rate limits)."""

    last_retry_after: str | None = None

    def _send_request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        response = super()._send_request(method, url, *args, **kwargs)
        self.last_retry_after = response.headers.get("Retry-After")
        return response


def _has(directory: messages.Directory, field: str) -> bool:
    try:
        directory[field]
    except KeyError:
        return False
    return True


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ari_cert_id(cert: x509.Certificate) -> str:
    """RFC 9773 CertID: base64url(AKI keyIdentifier) '.' base64url(serial DER integer)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    serial = cert.serial_number
    raw = serial.to_bytes((serial.bit_length() + 8) // 8, "big")
    return f"{_b64url(aki.key_identifier or b'')}.{_b64url(raw)}"


class ACMEConnector(ConnectorBase):
    """An ACME CA. `wait` bounds how long submit/poll keep going before returning Pending."""

    def __init__(
        self,
        config: ACMEConfig,
        *,
        data_dir: Path,
        solver: ChallengeSolver | None = None,
        wait: timedelta = timedelta(minutes=2),
        acme_client: client.ClientV2 | None = None,
        events: Callable[[Event], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(config.name, "acme")
        self.config = config
        self.wait = wait.total_seconds()
        if not config.directory.startswith("https://"):
            raise self.error(
                "config",
                f"directory {config.directory!r} is not https",
                "use the CA's https:// directory URL",
                reason="config",
            )
        if config.trust_anchor is not None and not config.trust_anchor.is_file():
            raise self.error(
                "config",
                f"trust_anchor {config.trust_anchor} is missing",
                "give a PEM file",
                reason="config",
            )
        self.state_dir = data_dir / "acme" / config.name
        self.solver: ChallengeSolver = solver or self._make_solver()
        self._client = acme_client  # normally connected on first use
        self._lock = asyncio.Lock()
        self._live: set[str] = set()  # challenge tokens presented by this process
        self._events = events  # the daemon's EventBus.publish: audit log and notifiers

    def __repr__(self) -> str:
        return f"ACMEConnector(name={self.name!r}, directory={self.config.directory!r}, solver={self.solver!r})"

    def _make_solver(self) -> ChallengeSolver:
        # Imported on demand: each solver pulls in its own stack (dnspython, aiohttp).
        if self.config.challenge == "dns-01":
            from expressway_certd.renewers.ca.dns01 import RFC2136Solver  # noqa: PLC0415 - optional: dnspython

            if self.config.rfc2136 is None:
                raise self.error(
                    "config", "dns-01 needs [rfc2136] settings", "add them", reason="config"
                )
            return RFC2136Solver(self, self.config.rfc2136)
        if self.config.challenge == "hook":
            from expressway_certd.renewers.ca.hook import HookSolver  # noqa: PLC0415 - loaded like the other solvers

            return HookSolver(self, self.config.hook, self.config.hook_timeout)
        from expressway_certd.renewers.ca.http01 import HTTP01Responder  # noqa: PLC0415 - optional: aiohttp server

        host, port = self.config.http01_listen
        return HTTP01Responder(self, host, port)

    # --- account (worker thread) --------------------------------------------
    def _account_key(self, *, fresh: bool = False) -> JWKEC:
        path = self.state_dir / "account.key"
        if path.exists() and not fresh:
            key = serialization.load_pem_private_key(path.read_bytes(), None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            write_private(
                path,
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
        return JWKEC(key=key)

    def _account_file(self) -> Path:
        return self.state_dir / "account.json"

    def _saved_account(self) -> str | None:
        """The account URL registered at this directory, if one is saved."""
        path = self._account_file()
        saved: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        if saved.get("directory") == self.config.directory and saved.get("uri"):
            return str(saved["uri"])
        return None

    def _connect(self, *, register: bool = False, fresh_key: bool = False) -> client.ClientV2:
        """Directory, account key and account URL; registers the account the first time.

        `register` registers even when an account is saved (the CA forgot it); `fresh_key`
        replaces the account key first (the CA refuses the old one).
        """
        if self._client is not None and not register:
            return self._client
        key = self._account_key(fresh=fresh_key)
        verify: bool | str = str(self.config.trust_anchor) if self.config.trust_anchor else True
        net = _Network(
            key,
            alg=ES256,
            verify_ssl=verify,  # type: ignore[arg-type]  # requests takes a CA file path too
            user_agent=f"expressway-certd/{__version__} acme-python",
            timeout=int(self.config.timeout.total_seconds()),
        )
        directory = client.ClientV2.get_directory(self.config.directory, net)
        acme = client.ClientV2(directory, net)
        saved_uri = self._saved_account()
        if saved_uri is not None and not register:
            net.account = messages.RegistrationResource(uri=saved_uri, body=messages.Registration())
        else:
            eab = None
            if self.config.eab_kid and self.config.eab_hmac:
                eab = messages.ExternalAccountBinding.from_data(
                    account_public_key=key.public_key(),
                    kid=self.config.eab_kid,
                    hmac_key=self.config.eab_hmac.reveal(),
                    directory=directory,
                )
            elif acme.external_account_required():
                raise self.error(
                    "account",
                    "the CA requires External Account Binding",
                    "set eab_kid and eab_hmac from the CA's account page",
                    reason="eab_required",
                )
            contact = (f"mailto:{self.config.email}",) if self.config.email else ()
            registration = messages.NewRegistration.from_data(
                terms_of_service_agreed=True, external_account_binding=eab
            ).update(contact=contact)
            self._ops["new_account"] = self.request_count("new_account") + 1
            try:
                regr = acme.new_account(registration)
            except errors.ConflictError as exc:  # key already registered: reuse it
                regr = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
            net.account = regr
            write_private(
                self._account_file(),
                json.dumps({"directory": self.config.directory, "uri": regr.uri}).encode(),
            )
        self._client = acme
        return acme

    # --- one request with retries and error mapping --------------------------
    async def _call(self, op: str, fn: Callable[[], T]) -> T:
        async with self._lock:
            with self.measure(op):
                for attempt in range(BAD_NONCE_RETRIES):
                    try:
                        return await asyncio.to_thread(fn)
                    except messages.Error as exc:
                        if exc.code == "badNonce" and attempt + 1 < BAD_NONCE_RETRIES:
                            self._ops["bad_nonce_retry"] = self.request_count("bad_nonce_retry") + 1
                            continue
                        raise self._problem(op, exc) from None
                    except requests.exceptions.SSLError as exc:
                        raise self.error(
                            op,
                            f"TLS certificate of {self.config.directory} does not verify ({exc})",
                            "set trust_anchor to the PEM of the CA that signed the ACME server's "
                            "TLS certificate",
                            reason="tls_verify",
                        ) from None
                    except requests.exceptions.Timeout:
                        raise self.error(
                            op,
                            f"{self.config.directory} did not answer within "
                            f"{self.config.timeout.total_seconds():g}s (timeout)",
                            "retried later; if the CA is always this slow, raise timeout",
                            reason="timeout",
                            retryable=True,
                        ) from None
                    except requests.exceptions.RequestException as exc:
                        raise self.error(
                            op,
                            f"cannot reach {self.config.directory} ({type(exc).__name__})",
                            "check the URL, DNS and proxy settings; retried later",
                            reason="unreachable",
                            retryable=True,
                        ) from None
                    except errors.Error as exc:
                        raise self.error(
                            op,
                            f"ACME client error: {exc}",
                            "retried later",
                            reason="acme_client",
                            retryable=True,
                        ) from None
                raise AssertionError("unreachable")

    def _problem(self, op: str, exc: messages.Error) -> CARequestError:
        code = exc.code or "error"
        fixes = {
            "rateLimited": "wait for the CA's rate limit to pass; the request is retried then",
            "badNonce": "the CA kept rejecting nonces; retried later",
            "externalAccountRequired": "set eab_kid and eab_hmac",
            "unauthorized": "check the account is allowed to order these names",
            "rejectedIdentifier": "the CA will not issue for one of the CSR's names: remove it",
            "badCSR": "the CA rejects the CSR (key type or size, or names): generate another",
            "accountDoesNotExist": "the account is registered again by itself; if this "
            "repeats, the CA keeps losing accounts: report it to the CA",
            "invalidProfile": "set profile to one the directory lists",
        }
        return self.error(
            op,
            f"the ACME server answered {code}: {exc.detail or exc.description or ''}".rstrip(": "),
            fixes.get(code, "see the CA's message"),
            reason=code,
            retryable=code in ("rateLimited", "badNonce", "serverInternal"),
        )

    def _post_as_get(self, url: str) -> requests.Response:
        acme = self._connect()
        return acme.net.post(url, None, new_nonce_url=acme.directory["newNonce"])

    # --- protocol ------------------------------------------------------------
    async def submit(self, csr: x509.CertificateSigningRequest) -> Issued | Pending:
        handle = self.new_handle(
            csr=csr_pem(csr).decode(), order_url=None, profile=self.config.profile, presented=[]
        )
        return self.outcome("submit", await self._advance(handle), csr)

    async def poll(self, handle: Mapping[str, Any]) -> Issued | Pending:
        self.check_handle(handle, "csr", "order_url")
        try:
            csr = x509.load_pem_x509_csr(str(handle["csr"]).encode())
        except ValueError:
            raise self.error(
                "poll",
                "the handle's CSR cannot be read",
                "submit the CSR again",
                reason="bad_handle",
            ) from None
        result = await self._advance(json.loads(json.dumps(dict(handle))))
        return self.outcome("poll", result, csr)

    async def _new_order(self, handle: dict[str, Any]) -> None:
        profile = handle.get("profile")
        orderr = await self._call(
            "new_order",
            lambda: self._connect().new_order(handle["csr"].encode(), profile=profile),
        )
        handle["order_url"] = orderr.uri

    def _retry_after(self, default: float) -> float:
        net = self._client.net if self._client is not None else None
        return parse_retry_after(getattr(net, "last_retry_after", None), default)

    async def _advance(self, handle: dict[str, Any]) -> Issued | Pending:
        """Move the order forward. A rate limit on any request is a wait until the CA's
        Retry-After (RFC 8555 6.6), with the order kept: the next poll continues it."""
        try:
            return await self._advance_recovering(handle)
        except CARequestError as exc:
            if exc.reason != "rateLimited":
                raise
            wait = self._retry_after(RATE_LIMIT_WAIT)
            return Pending(
                handle,
                retry_at(wait),
                f"rate limited by the CA; asking again in {wait:.0f}s ({exc})",
            )

    async def _advance_recovering(self, handle: dict[str, Any]) -> Issued | Pending:
        """Move the order forward; once per call, recover an account the CA has lost."""
        try:
            return await self._advance_order(handle)
        except CARequestError as exc:
            cause = await self._account_lost(exc)
            if cause is None:
                raise
        await self._recreate_account(handle, cause)
        return await self._advance_order(handle)

    async def _account_lost(self, exc: CARequestError) -> str | None:
        """Why the CA no longer accepts our account, or None when `exc` means something else.

        `accountDoesNotExist` says it directly. `unauthorized` is also what a CA answers to
        names the account may not order, so the account URL is asked before acting on it.
        """
        if exc.reason == "accountDoesNotExist":
            return "accountDoesNotExist"
        if exc.reason != "unauthorized" or self._client is None:
            return None
        regr = self._client.net.account
        if regr is None:
            return None
        try:
            response = await self._call("account", lambda: self._post_as_get(regr.uri))
        except CARequestError as probe:
            lost = probe.reason in ("accountDoesNotExist", "unauthorized")
            return probe.reason if lost else None
        status = str(response.json().get("status", ""))
        return status if status in DEAD_ACCOUNT else None

    async def _recreate_account(self, handle: dict[str, Any], cause: str) -> None:
        """Register again (a new key when the old one is refused) and drop the lost order."""
        old = self._saved_account() or "(none saved)"
        new_key = cause in DEAD_ACCOUNT
        try:
            await self._call("account", lambda: self._connect(register=True, fresh_key=new_key))
        except CARequestError as exc:
            if new_key or exc.reason != "unauthorized":
                raise
            new_key = True
        if not new_key and self._saved_account() == old:
            # The CA still binds our key to the account it refuses: a deactivated account's
            # key stays refused (RFC 8555 7.3.6), so only a new key gets a new account.
            new_key = True
        if new_key and self._saved_account() == old:
            await self._call("account", lambda: self._connect(register=True, fresh_key=True))
        new = self._saved_account() or ""
        order = "re-created" if handle.get("order_url") else "none"
        await self._cleanup(handle)
        handle["order_url"] = None
        log.warning(
            "ca.acme_account_recreated",
            ca=self.name,
            cause=cause,
            old_account=old,
            new_account=new,
            new_key=new_key,
            order=order,
        )
        if self._events is not None:
            await self._events(
                AcmeAccountRecreated(
                    target=f"ca:{self.name}",
                    time=utcnow(),
                    ca=self.name,
                    directory=self.config.directory,
                    cause=cause,
                    old_account=old,
                    new_account=new,
                    new_key=new_key,
                    order=order,
                )
            )

    async def _advance_order(self, handle: dict[str, Any]) -> Issued | Pending:
        """Move the order forward until issued, or until `wait` has passed."""
        deadline = time.monotonic() + self.wait
        if handle.get("order_url") is None:
            await self._new_order(handle)
        csr = x509.load_pem_x509_csr(handle["csr"].encode())
        backoff = 0.2
        while True:
            response = await self._call("order", lambda: self._post_as_get(handle["order_url"]))
            order = messages.Order.from_json(response.json())
            if order.status == messages.STATUS_PENDING:
                await self._answer(handle, order)
            elif order.status == messages.STATUS_READY:
                await self._call("finalize", lambda order=order: self._finalize(order, csr))  # type: ignore[misc]
                continue
            elif order.status == messages.STATUS_VALID and order.certificate:
                # The profile the CA says it used, else the one we asked for.
                profile = order.profile or handle.get("profile")
                issued = await self._download(order.certificate, csr, profile)
                await self._cleanup(handle)
                return issued
            elif order.status == messages.STATUS_INVALID:
                await self._cleanup(handle)
                raise self.error(
                    "order",
                    f"the order failed: {self._order_error(order)}",
                    "fix what the CA reports (challenge answer not visible, names not allowed), "
                    "then submit the CSR again",
                    reason="order_invalid",
                )
            remaining = deadline - time.monotonic()
            if order.status == messages.STATUS_PROCESSING:
                pause = self._retry_after(DEFAULT_POLL)
            else:
                pause = DEFAULT_POLL
            if remaining <= 0:
                return Pending(handle, retry_at(pause), f"order {order.status}")
            # Validation usually takes well under a second: look again soon, then back off.
            await asyncio.sleep(min(pause, remaining, backoff))
            backoff = min(backoff * 2, DEFAULT_POLL)

    def _order_error(self, order: messages.Order) -> str:
        if order.error is not None:
            return str(order.error.detail or order.error.code)
        for url in order.authorizations:
            authz = messages.Authorization.from_json(self._post_as_get(url).json())
            for challb in authz.challenges:
                if challb.error is not None:
                    return f"{authz.identifier.value}: {challb.error.detail or challb.error.code}"
        return "no reason given"

    def _finalize(self, order: messages.Order, csr: x509.CertificateSigningRequest) -> None:
        acme = self._connect()
        acme.net.post(
            order.finalize,
            messages.CertificateRequest(csr=csr),
            new_nonce_url=acme.directory["newNonce"],
        )

    async def _answer(self, handle: dict[str, Any], order: messages.Order) -> None:
        """Present and answer every pending authorization's challenge of the solver's type."""
        for url in order.authorizations:
            response = await self._call("authorization", lambda url=url: self._post_as_get(url))  # type: ignore[misc]
            authz = messages.Authorization.from_json(response.json())
            if authz.status != messages.STATUS_PENDING:
                continue
            challb = next(
                (c for c in authz.challenges if c.chall.typ == self.solver.challenge_type), None
            )
            if challb is None:
                offered = ", ".join(c.chall.typ for c in authz.challenges)
                raise self.error(
                    "challenge",
                    f"{authz.identifier.value}: the CA offers no {self.solver.challenge_type} (offers {offered})",
                    "choose another challenge in the config",
                    reason="challenge_unsupported",
                )
            item = self._presentation(authz.identifier.value, challb)
            if item.token not in self._live:
                # Once per process: a new process re-presents (an HTTP-01 answer lived in
                # the old one's memory); solvers make presenting twice harmless.
                await self.solver.present(item)
                self._live.add(item.token)
            if item.to_json() not in handle["presented"]:
                handle["presented"].append(item.to_json())
            if challb.status == messages.STATUS_PENDING:
                await self._call(
                    "challenge",
                    lambda challb=challb: self._connect().answer_challenge(  # type: ignore[misc]
                        challb, challb.chall.response(self._connect().net.key)
                    ),
                )

    def _presentation(self, domain: str, challb: messages.ChallengeBody) -> Presentation:
        chall = challb.chall
        assert isinstance(chall, challenges.KeyAuthorizationChallenge)
        key = self._connect().net.key
        assert key is not None
        key_authz = chall.key_authorization(key)
        txt = chall.validation(key) if isinstance(chall, challenges.DNS01) else ""
        return Presentation(domain, chall.encode("token"), key_authz, str(txt))

    async def _cleanup(self, handle: dict[str, Any]) -> None:
        for data in handle.get("presented", []):
            item = Presentation.from_json(data)
            self._live.discard(item.token)
            # A stale TXT record or file harms nothing; the next order adds its own.
            with contextlib.suppress(CARequestError):
                await self.solver.cleanup(item)
        handle["presented"] = []

    async def _download(
        self, url: str, csr: x509.CertificateSigningRequest, profile: str | None
    ) -> Issued:
        response = await self._call("certificate", lambda: self._post_as_get(url))
        certs = load_pem_certs(response.content)
        leaf = self.leaf_for("certificate", certs, csr, "report it to the CA; submit again")
        # RFC 8555 7.4.2 puts the leaf first, then each issuer; a CA that does not is read
        # by the names, as the pipeline and the Expressway expect the issuing order.
        return Issued(leaf, order_chain(leaf, certs), profile)

    async def ca_chain(self) -> tuple[x509.Certificate, ...]:
        """ACME publishes the chain with each certificate; without one, nothing to fetch."""
        return ()

    def capabilities(self) -> CACapabilities:
        profile = self.config.profile
        if profile in SERVER_ONLY_PROFILES:
            return CACapabilities(
                "acme", profile, frozenset({SERVER_AUTH}), "public profile: serverAuth only"
            )
        return CACapabilities("acme", profile, None, "the CA's profile decides the EKUs")

    async def directory_info(self) -> dict[str, Any]:
        acme = await self._call("directory", self._connect)
        meta = acme.directory.meta
        return {
            "profiles": dict(meta.profiles or {}),
            "ari": _has(acme.directory, "renewalInfo"),
            "eab_required": bool(meta.external_account_required),
            "terms": meta.terms_of_service,
        }

    async def renewal_window(self, leaf: x509.Certificate) -> RenewalWindow | None:
        acme = await self._call("directory", self._connect)
        if not _has(acme.directory, "renewalInfo"):
            return None
        url = f"{acme.directory['renewalInfo'].rstrip('/')}/{ari_cert_id(leaf)}"
        response = await self._call("renewal_info", lambda: acme.net.get(url))
        info = messages.RenewalInfo.from_json(response.json())
        window = info.suggested_window
        wait = parse_retry_after(response.headers.get("Retry-After"), 6 * 3600)
        return RenewalWindow(
            window.start.astimezone(UTC),
            window.end.astimezone(UTC),
            utcnow() + timedelta(seconds=wait),
        )

    async def check(self) -> list[CheckResult]:
        info = await self.directory_info()
        results = [
            CheckResult(
                "directory",
                True,
                f"{self.config.directory}: ARI {'yes' if info['ari'] else 'no'}, "
                f"profiles {', '.join(info['profiles']) or 'none'}",
            ),
            await self._check_account(),
        ]
        if self.config.profile and info["profiles"] and self.config.profile not in info["profiles"]:
            results.append(
                CheckResult(
                    "profile",
                    False,
                    f"{self.config.profile!r} not offered; choose one of {', '.join(info['profiles'])}",
                )
            )
        return results

    async def _check_account(self) -> CheckResult:
        """Whether the CA still accepts the saved account; a lost one is only reported here
        (the next order registers again), so `ca-check` changes nothing at the CA."""
        acme = await self._call("directory", self._connect)
        regr = acme.net.account
        if regr is None:
            return CheckResult("account", True, "no account yet: the first order registers one")
        uri = regr.uri
        try:
            response = await self._call("account", lambda: self._post_as_get(uri))
            status = str(response.json().get("status", "unknown"))
        except CARequestError as exc:
            if exc.reason not in ("accountDoesNotExist", "unauthorized"):
                raise
            status = exc.reason
        if status == "valid":
            return CheckResult("account", True, f"{uri} valid; key in {self.state_dir} (0600)")
        return CheckResult(
            "account",
            True,
            f"the CA no longer accepts {uri} ({status}); the next order registers again "
            "(event AcmeAccountRecreated)",
        )

    async def aclose(self) -> None:
        await self.solver.aclose()
