"""TLS probing: one handshake per endpoint captures the served chain, verifies it and times it.

Direct TLS and XMPP STARTTLS (RFC 6120). A global semaphore bounds concurrency and every probe
runs under a hard deadline, so an endpoint that accepts TCP and never answers, or trickles bytes,
costs one slot for at most `timeout` seconds and never delays the others.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import hashlib
import itertools
import socket
import ssl
import time
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)
from OpenSSL import crypto

from expressway_certd.monitor.durations import utcnow
from expressway_certd.monitor.endpoint import Endpoint
from expressway_certd.monitor.errors import CertParseError, ConfigError
from expressway_certd.monitor.facts import (
    CertFacts,
    cached_facts,
    cert_pem,
    is_ip_address,
    load_certificates,
)
from expressway_certd.monitor.lint import LintFinding, lint_chain, lint_tls, webpki_finding


class ErrorClass(StrEnum):
    """Why a probe failed; also the `reason` operators see in metrics and the CLI."""

    REFUSED = "refused"
    TIMEOUT = "timeout"
    TLS_ALERT = "tls_alert"
    NOT_TLS = "not_tls"
    STARTTLS = "starttls_failed"
    DNS = "dns"
    NETWORK = "network"
    BAD_CERT = "bad_certificate"
    VERIFY = "verification_failed"


@dataclass(frozen=True)
class Observation:
    """What one probe of one endpoint saw."""

    target: str
    endpoint: Endpoint
    time: datetime
    ok: bool
    error_class: str | None = None
    error: str | None = None
    duration: float = 0.0  # seconds: TCP connect + STARTTLS + TLS handshake
    tls_version: str | None = None
    chain_der: tuple[bytes, ...] = ()  # leaf first, as served
    chain_verified: bool | None = None  # None: nothing to verify (probe failed)
    verify_error: str | None = None
    facts: CertFacts | None = None
    chain_facts: tuple[CertFacts, ...] = field(default=(), compare=False)
    lint: tuple[LintFinding, ...] = ()  # advisories (monitor/lint.py); never a failure

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.target, self.endpoint.host, self.endpoint.port)

    def chain_pem(self) -> str:
        return "".join(cert_pem(x509.load_der_x509_certificate(der)) for der in self.chain_der)


@dataclass(frozen=True)
class ChainVerdict:
    """What verification of one served chain concluded.

    `ok` is OpenSSL's verdict (X509_verify_cert, as `openssl verify -CAfile BUNDLE -untrusted
    SERVED LEAF` gives it); `error` says what is missing or wrong; `lint` holds the advisories
    (monitor/lint.py) that never change `ok`.
    """

    ok: bool
    error: str | None = None
    path: tuple[x509.Certificate, ...] = ()  # leaf to anchor, when OpenSSL built one
    lint: tuple[LintFinding, ...] = ()
    # The first instant after the verification time at which a certificate it looked at (the
    # served chain, the built path, the trust anchors) starts or stops being valid, so the
    # same question may get another answer; None: no such instant.
    holds_until: datetime | None = None


class TrustStore:
    """The trust anchors served chains are verified against (bundle files + system roots).

    The verdict is OpenSSL's own chain verification (through pyOpenSSL's X509StoreContext),
    because the peers whose view `chain_verified` predicts (Expressway, Unified CM) run
    OpenSSL. Like
    `openssl verify`: no purpose check, no security level (weak keys and SHA-1 are lint),
    only self-signed certificates end a chain (a bundle holding just an intermediate fails,
    as it does on an OpenSSL peer). docs/chain-verdict.md lists the differential test's cases.
    """

    def __init__(
        self,
        bundles: Sequence[Path] = (),
        *,
        system_roots: bool = False,
        certificates: Sequence[x509.Certificate] = (),
    ) -> None:
        anchors: list[x509.Certificate] = list(certificates)
        for bundle in bundles:
            try:
                anchors.extend(load_certificates(bundle.read_bytes(), source=str(bundle)))
            except OSError as exc:
                raise ConfigError(f"trust bundle {bundle}: {exc.strerror}") from exc
        if system_roots:
            anchors.extend(_system_roots())
        self.anchors = anchors
        # Each TrustStore is its own key in verdict caches: two stores with the same files
        # (a reload after the bundle changed) or the same description never share a verdict.
        self.token = next(_TRUST_STORE_IDS)
        self._anchor_times = sorted(_validity_edges(anchors))
        self.description = (
            ", ".join(str(b) for b in bundles) + (" + system roots" if system_roots else "")
        ) or ("given anchors" if certificates else "no trust anchors")
        self._store = Store(anchors) if anchors else None
        self._ossl_anchors: list[crypto.X509] = []
        for anchor in dict.fromkeys(anchors):  # the same certificate twice counts once
            with contextlib.suppress(crypto.Error):  # one OpenSSL cannot use is left out
                self._ossl_anchors.append(crypto.X509.from_cryptography(anchor))
        self._ossl_at: tuple[int, crypto.X509Store] | None = None

    def _ossl_store(self, now: datetime) -> crypto.X509Store:
        """An OpenSSL store of the anchors that verifies at `now` (OpenSSL takes whole seconds).

        A new store per second, because a store's verification time can be set only once:
        pyOpenSSL's `set_time` goes through X509_STORE_set1_param, which keeps a time the
        store already has, so every later verdict of a long-lived store would be judged at
        the time of its first one (a certificate that expired since would still verify).
        """
        second = int(now.timestamp())
        if self._ossl_at is None or self._ossl_at[0] != second:
            store = crypto.X509Store()
            for anchor in self._ossl_anchors:
                with contextlib.suppress(crypto.Error):
                    store.add_cert(anchor)
            store.set_time(now)
            self._ossl_at = (second, store)
        return self._ossl_at[1]

    def verify(self, chain: Sequence[x509.Certificate], now: datetime) -> tuple[bool, str | None]:
        """Does the chain build from its leaf to an anchor, valid at `now`? Names and EKU are
        checked elsewhere (an Expressway serves by address and may legitimately be serverAuth-only).
        """
        verdict = self.verdict(chain, now)
        return verdict.ok, verdict.error

    def verdict(self, chain: Sequence[x509.Certificate], now: datetime) -> ChainVerdict:
        """OpenSSL's verdict on `chain` (leaf first, as served) at `now`, with lint findings
        and the instant until which the same question gets the same answer (`holds_until`)."""
        verdict = self._verdict(chain, now)
        return replace(verdict, holds_until=self._holds_until(chain, verdict.path, now))

    def _holds_until(
        self,
        chain: Sequence[x509.Certificate],
        path: Sequence[x509.Certificate],
        now: datetime,
    ) -> datetime | None:
        """The first validity edge (notBefore, or notAfter) after `now` among the certificates
        a verdict at `now` depended on: the served chain, the built path and every anchor
        (an anchor not in the path may be the one that becomes valid). An unreadable
        certificate gives None only for itself: its verdict does not change with time."""
        edges = [e for c in (*chain, *path) for e in _validity_edges((c,)) if e > now]
        later = bisect.bisect_right(self._anchor_times, now)
        if later < len(self._anchor_times):
            edges.append(self._anchor_times[later])
        return min(edges, default=None)

    def _verdict(self, chain: Sequence[x509.Certificate], now: datetime) -> ChainVerdict:
        if not chain:
            return ChainVerdict(False, "no certificate served")
        if not self.anchors:
            return ChainVerdict(
                False, "no trust anchors configured (give a CA bundle)", lint=_lint_served(chain)
            )
        try:
            leaf = crypto.X509.from_cryptography(chain[0])  # new with each chain: not kept
            untrusted = [_openssl_x509(c) for c in chain[1:]]
            ctx = crypto.X509StoreContext(self._ossl_store(now), leaf, untrusted)
            built = ctx.get_verified_chain()
            path = tuple(c.to_cryptography() for c in built)
        except crypto.X509StoreContextError as exc:
            return ChainVerdict(False, _explain(exc, chain), lint=_lint_served(chain))
        except (crypto.Error, ValueError, TypeError, UnsupportedAlgorithm) as exc:
            # a certificate OpenSSL cannot use (an unreadable key, a broken encoding)
            return ChainVerdict(
                False, f"the chain cannot be checked: {exc}", lint=_lint_served(chain)
            )
        return ChainVerdict(True, None, path, self._lint(path, now))

    def _lint(self, path: tuple[x509.Certificate, ...], now: datetime) -> tuple[LintFinding, ...]:
        facts = [f for f in (_facts_or_none(c) for c in path) if f is not None]
        findings = lint_chain(facts)
        if findings or self._store is None:
            return findings
        # Anything else the web PKI rules object to (Ed25519, a CA without basicConstraints...)
        verifier = (
            PolicyBuilder()
            .store(self._store)
            .time(now)
            .extension_policies(
                ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=ExtensionPolicy.permit_all(),
            )
            .build_client_verifier()
        )
        try:
            verifier.verify(path[0], list(path[1:]))
        except VerificationError as exc:
            subject = facts[0].subject if facts else ""
            return (webpki_finding(subject, _short_verify_error(exc)),)
        return ()


def _lint_served(chain: Sequence[x509.Certificate]) -> tuple[LintFinding, ...]:
    """Lint of the chain as served, when OpenSSL built no path."""
    return lint_chain([f for f in (_facts_or_none(c) for c in chain) if f is not None])


_TRUST_STORE_IDS = itertools.count(1)


def _validity_edges(certs: Iterable[x509.Certificate]) -> Iterator[datetime]:
    """notBefore and notAfter of each readable certificate: the instants its validity may
    flip. OpenSSL compares whole seconds and takes notAfter itself as still valid, so
    notAfter is an edge a second early (a verdict recomputed early is only a cache miss)."""
    for cert in certs:
        try:  # read off the certificate: an anchor's whole facts are not needed for this
            edges = (cert.not_valid_before_utc, cert.not_valid_after_utc)
        except ValueError:  # a validity cryptography cannot read: no edge to wait for
            continue
        yield from edges


def _facts_or_none(cert: x509.Certificate) -> CertFacts | None:
    try:
        return cached_facts(cert)
    except CertParseError:
        return None


@functools.lru_cache(maxsize=256)
def _openssl_x509(cert: x509.Certificate) -> crypto.X509:
    """pyOpenSSL's copy of a served CA certificate, remembered per process: decoding one costs
    about 0.1 ms under OpenSSL 3.0, and the issuing CA of a served chain is the same for
    hundreds of endpoints (leaves, new with each chain, are not kept). The copies are only
    read (an X509StoreContext takes a reference), never changed, and carry nothing of a trust
    store or a time, so one verdict cannot leak into another."""
    return crypto.X509.from_cryptography(cert)


# OpenSSL X509_V_ERR codes the verdict explains in the operator's words
_UNABLE_TO_GET_ISSUER_CERT = 2
_DEPTH_ZERO_SELF_SIGNED_CERT = 18
_SELF_SIGNED_CERT_IN_CHAIN = 19
_UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20


def _explain(exc: crypto.X509StoreContextError, chain: Sequence[x509.Certificate]) -> str:
    """What is missing or wrong, naming the certificate OpenSSL stopped at."""
    code, depth, message = ([*list(exc.errors), 0, 0, str(exc)])[:3]
    subject = issuer = "?"
    if exc.certificate is not None:
        with contextlib.suppress(crypto.Error, ValueError, TypeError):
            cert = exc.certificate.to_cryptography()
            subject, issuer = _rfc4514(cert.subject), _rfc4514(cert.issuer)
    if code in (_UNABLE_TO_GET_ISSUER_CERT, _UNABLE_TO_GET_ISSUER_CERT_LOCALLY):
        served = " the server sends no intermediate," if len(chain) == 1 else ""
        return (
            f"issuer {issuer} of {subject} is not served and not in the trust bundle:"
            f"{served} add the missing CA to the served chain or the bundle"
            + (
                " (a bundle needs the self-signed root; OpenSSL does not stop at an intermediate)"
                if code == _UNABLE_TO_GET_ISSUER_CERT
                else ""
            )
        )
    if code == _DEPTH_ZERO_SELF_SIGNED_CERT:
        return f"self-signed certificate {subject} is not in the trust bundle"
    if code == _SELF_SIGNED_CERT_IN_CHAIN:
        return f"self-signed root {subject} is served but not in the trust bundle"
    return f"{message} (certificate {subject}, depth {depth})"


def _rfc4514(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except (ValueError, TypeError):
        return "<unreadable name>"


def _short_verify_error(exc: VerificationError) -> str:
    text = str(exc)
    text = text.removeprefix("validation failed: ")
    text = text.removeprefix("candidates exhausted: ")
    return text.split(" (encountered processing", 1)[0]


def _system_roots() -> list[x509.Certificate]:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            pems = x509.load_pem_x509_certificates(Path(candidate).read_bytes())
            return list(pems)
    return []


def _client_context() -> ssl.SSLContext:
    # We capture whatever the server presents and verify it ourselves (one handshake).
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # See what old boxes serve rather than refuse them (TLS 1.0/1.1 need security level 0).
    with contextlib.suppress(ssl.SSLError):
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    return ctx


def served_chain_der(ssl_object: ssl.SSLObject) -> list[bytes]:
    """The chain as the server sent it, leaf first (3.13 API, or the private one on 3.11/3.12)."""
    getter = getattr(ssl_object, "get_unverified_chain", None)
    if getter is not None:
        return [bytes(c) for c in getter()]
    raw = ssl_object._sslobj.get_unverified_chain()  # type: ignore[attr-defined]
    if not raw:
        der = ssl_object.getpeercert(binary_form=True)
        return [der] if der else []
    return [c.public_bytes(ssl._ssl.ENCODING_DER) for c in raw]  # type: ignore[attr-defined]


_XMPP_OPEN = (
    "<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
)
_XMPP_STARTTLS = b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"


async def _read_until(reader: asyncio.StreamReader, needles: Iterable[bytes], limit: int) -> bytes:
    data = b""
    needles = tuple(needles)
    while not any(n in data for n in needles):
        chunk = await reader.read(4096)
        if not chunk:
            raise ConnectionResetError("server closed the connection during STARTTLS")
        data += chunk
        if len(data) > limit:
            raise ValueError("server sent too much before STARTTLS")
    return data


async def xmpp_starttls(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, domain: str
) -> None:
    """Negotiate XMPP STARTTLS up to <proceed/> (RFC 6120 section 5.4)."""
    writer.write(_XMPP_OPEN.format(domain=domain).encode())
    await writer.drain()
    features = await _read_until(reader, (b"</stream:features>", b"<stream:error"), 65536)
    if b"<stream:error" in features or b"urn:ietf:params:xml:ns:xmpp-tls" not in features:
        raise _StartTLSRefused("server does not offer STARTTLS in its stream features")
    writer.write(_XMPP_STARTTLS)
    await writer.drain()
    answer = await _read_until(reader, (b"<proceed", b"<failure"), 65536)
    if b"<proceed" not in answer:
        raise _StartTLSRefused("server answered STARTTLS with <failure/>")


class _StartTLSRefused(Exception):
    pass


class _Handshake(asyncio.Protocol):
    """Just a TLS client handshake over memory BIOs, nothing after it.

    asyncio's SSL transport sets up buffers and an application-data machinery a probe never
    uses; driving the handshake directly costs about a sixth less CPU per probe.
    """

    def __init__(
        self, ctx: ssl.SSLContext, server_hostname: str | None, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        self.done: asyncio.Future[None] = loop.create_future()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._advance()

    def data_received(self, data: bytes) -> None:
        self._incoming.write(data)
        self._advance()

    def eof_received(self) -> bool | None:
        self._fail(ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("connection closed during the TLS handshake"))

    def _fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)

    def _advance(self) -> None:
        if self.done.done():
            return
        try:
            self.tls.do_handshake()
            finished = True
        except ssl.SSLWantReadError:
            finished = False
        except ssl.SSLError as exc:
            self._flush()  # let the server see our alert
            self._fail(exc)
            return
        self._flush()
        if finished:
            self.done.set_result(None)

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data and self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)


class _FactsCache:
    """Parsed facts and verification results per (served chain, trust store), so an unchanged
    certificate costs no parsing on the next poll. A verdict is redone once `ttl` seconds old,
    and at once when the verification time reaches its `holds_until` (a certificate of the
    chain, the path or the store expired or became valid since)."""

    def __init__(self, size: int = 4096, ttl: float = 3600.0) -> None:
        self._items: OrderedDict[bytes, tuple[float, tuple[CertFacts, ...], ChainVerdict]] = (
            OrderedDict()
        )
        self._size = size
        self._ttl = ttl

    def get(
        self, key: bytes, now: float, when: datetime
    ) -> tuple[tuple[CertFacts, ...], ChainVerdict] | None:
        item = self._items.get(key)
        if item is None or now - item[0] > self._ttl:
            return None
        verdict = item[2]
        if verdict.holds_until is not None and when >= verdict.holds_until:
            return None
        self._items.move_to_end(key)
        return item[1], verdict

    def put(
        self, key: bytes, now: float, facts: tuple[CertFacts, ...], verdict: ChainVerdict
    ) -> None:
        # the built path is not kept: only the verdict, its message and lint are needed later
        self._items[key] = (now, facts, replace(verdict, path=()))
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


Clock = Callable[[], datetime]


class Prober:
    """Probes endpoints under one global concurrency bound and a hard per-probe deadline."""

    def __init__(
        self,
        trust: TrustStore,
        *,
        concurrency: int = 64,
        timeout: float = 10.0,
        clock: Clock = utcnow,
    ) -> None:
        self.trust = trust
        self.timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)
        self._ctx = _client_context()
        self._clock = clock
        self._cache = _FactsCache()

    async def probe(
        self, target: str, endpoint: Endpoint, *, trust: TrustStore | None = None
    ) -> Observation:
        async with self._slots:
            return await self._probe_now(target, endpoint, trust or self.trust)

    async def probe_many(
        self,
        items: Sequence[tuple[str, Endpoint]],
        on_done: Callable[[Observation], Awaitable[None] | None] | None = None,
    ) -> list[Observation]:
        """Probe all concurrently (within the global bound); results in input order."""

        async def one(target: str, endpoint: Endpoint) -> Observation:
            obs = await self.probe(target, endpoint)
            if on_done is not None:
                result = on_done(obs)
                if result is not None:
                    await result
            return obs

        return list(await asyncio.gather(*(one(t, e) for t, e in items)))

    async def _probe_now(self, target: str, endpoint: Endpoint, trust: TrustStore) -> Observation:
        started = time.monotonic()
        when = self._clock()
        writer: asyncio.StreamWriter | None = None
        transport: asyncio.BaseTransport | None = None

        def failed(error_class: ErrorClass, message: str) -> Observation:
            return Observation(
                target=target,
                endpoint=endpoint,
                time=when,
                ok=False,
                error_class=error_class.value,
                error=message,
                duration=time.monotonic() - started,
            )

        sni = endpoint.sni or (None if is_ip_address(endpoint.host) else endpoint.host)
        try:
            async with asyncio.timeout(self.timeout):
                if endpoint.starttls:
                    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
                    await xmpp_starttls(reader, writer, sni or endpoint.host)
                    await writer.start_tls(self._ctx, server_hostname=sni)
                    ssl_object = writer.get_extra_info("ssl_object")
                else:
                    loop = asyncio.get_running_loop()
                    transport, handshake = await loop.create_connection(
                        lambda: _Handshake(self._ctx, sni, loop), endpoint.host, endpoint.port
                    )
                    await handshake.done
                    ssl_object = handshake.tls
                duration = time.monotonic() - started
                chain = served_chain_der(ssl_object)
                version = ssl_object.version()
        except TimeoutError:
            return failed(
                ErrorClass.TIMEOUT,
                f"no complete TLS handshake within {self.timeout:g}s "
                "(port open but silent or too slow; check the service and firewalls)",
            )
        except ConnectionRefusedError:
            return failed(ErrorClass.REFUSED, "connection refused (service down or port closed)")
        except socket.gaierror as exc:
            return failed(ErrorClass.DNS, f"cannot resolve {endpoint.host}: {exc.strerror}")
        except _StartTLSRefused as exc:
            return failed(ErrorClass.STARTTLS, str(exc))
        except ssl.SSLError as exc:
            return failed(*_classify_ssl_error(exc))
        except (ConnectionError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
            message = str(exc) or type(exc).__name__
            if endpoint.starttls:
                return failed(ErrorClass.STARTTLS, f"STARTTLS negotiation failed: {message}")
            return failed(ErrorClass.NETWORK, f"connection failed: {message}")
        finally:
            # We need nothing more from the server: no close_notify round trip.
            if writer is not None:
                writer.transport.abort()
            if transport is not None:
                transport.abort()  # type: ignore[attr-defined]

        if not chain:
            return failed(ErrorClass.BAD_CERT, "server completed TLS without a certificate")
        return self._analyse(target, endpoint, when, duration, version, chain, trust)

    def _analyse(
        self,
        target: str,
        endpoint: Endpoint,
        when: datetime,
        duration: float,
        version: str | None,
        chain: list[bytes],
        trust: TrustStore,
    ) -> Observation:
        key = hashlib.sha256(b"%d:" % trust.token + b"".join(chain)).digest()
        now = time.monotonic()
        cached = self._cache.get(key, now, when)
        if cached is None:
            try:
                certs = [x509.load_der_x509_certificate(der) for der in chain]
                facts = tuple(cached_facts(c) for c in certs)
            except (ValueError, CertParseError) as exc:
                return Observation(
                    target=target,
                    endpoint=endpoint,
                    time=when,
                    ok=False,
                    error_class=ErrorClass.BAD_CERT.value,
                    error=f"served certificate is unreadable: {exc}",
                    duration=duration,
                    tls_version=version,
                    chain_der=tuple(chain),
                )
            verdict = trust.verdict(certs, when)
            self._cache.put(key, now, facts, verdict)
        else:
            facts, verdict = cached
        return Observation(
            target=target,
            endpoint=endpoint,
            time=when,
            ok=True,
            duration=duration,
            tls_version=version,
            chain_der=tuple(chain),
            chain_verified=verdict.ok,
            verify_error=verdict.error,
            facts=facts[0],
            chain_facts=facts,
            lint=verdict.lint + lint_tls(version),
        )


def _classify_ssl_error(exc: ssl.SSLError) -> tuple[ErrorClass, str]:
    reason = getattr(exc, "reason", None) or str(exc)
    text = str(reason).upper()
    if any(s in text for s in ("WRONG_VERSION_NUMBER", "RECORD_LAYER", "PACKET_LENGTH_TOO_LONG")):
        return ErrorClass.NOT_TLS, f"the service does not speak TLS on this port ({reason})"
    if "ALERT" in text:
        return ErrorClass.TLS_ALERT, f"server sent a TLS alert: {reason}"
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return ErrorClass.TLS_ALERT, "server closed the connection during the TLS handshake"
    return ErrorClass.TLS_ALERT, f"TLS handshake failed: {reason}"
