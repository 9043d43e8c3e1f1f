"""Test-only fault injection for the device and CA calls of a renewal.

Call sites are found, not listed: every public coroutine method of the device clients
(ExpresswayClient, CucmClient) and of the EST connector is wrapped so that a context variable
names the innermost one running; the transport seams (`HttpApi.request` for the boxes,
`renewers.ca.est.send` for the CA) record which call site each HTTP exchange belongs to. A
clean renewal lists the call sites it uses; then one fault at a time is injected into the first
HTTP exchange of one call site:

- timeout: the exchange raises what the transport raises when no answer comes in time;
- http500: the final answer is HTTP 500 (after the transport's own retries);
- truncated: the real answer with its body cut in half;
- wrong_shape: the real status with a JSON body of an unexpected shape.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from expressway_certd.renewers.ca import est as est_module
from expressway_certd.renewers.ca import httpclient
from expressway_certd.renewers.ca.est import ESTConnector
from expressway_certd.renewers.ca.httpclient import Reply as CAReply
from expressway_certd.renewers.cucm import CucmClient
from expressway_certd.renewers.device_http import DeviceReply, HttpApi
from expressway_certd.renewers.expressway import ExpresswayClient

CLIENTS: tuple[type, ...] = (ExpresswayClient, CucmClient, ESTConnector)
KINDS = ("timeout", "http500", "truncated", "wrong_shape")
WRONG_SHAPE = json.dumps({"unexpected": [1, {"shape": None}]})

_SITE: contextvars.ContextVar[str] = contextvars.ContextVar("fault_site", default="")


def public_coroutines(cls: type) -> list[str]:
    """Names of the public coroutine methods a class defines (its call sites)."""
    return sorted(
        name
        for name, member in inspect.getmembers(cls, inspect.iscoroutinefunction)
        if not name.startswith("_")
    )


@dataclass
class FaultPlan:
    """What to inject (None: record only) and what was seen."""

    site: str | None = None
    kind: str = ""
    fired: int = 0
    seen: set[str] = field(default_factory=set)

    def take(self) -> str | None:
        """The fault for this exchange, once per run; records the call site either way."""
        site = _SITE.get()
        if site:
            self.seen.add(site)
        if self.site is not None and site == self.site and not self.fired:
            self.fired += 1
            return self.kind
        return None


def _wrap_site(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = _SITE.set(name)
        try:
            return await method(*args, **kwargs)
        finally:
            _SITE.reset(token)

    return wrapper


@contextmanager
def fault_layer(monkeypatch: pytest.MonkeyPatch, plan: FaultPlan) -> Iterator[None]:
    for cls in CLIENTS:
        for name in public_coroutines(cls):
            monkeypatch.setattr(cls, name, _wrap_site(f"{cls.__name__}.{name}", getattr(cls, name)))

    real_request = HttpApi.request

    async def request(self: HttpApi, method: str, path: str, **kwargs: Any) -> DeviceReply:
        kind = plan.take()
        step = str(kwargs.get("step", path))
        if kind == "timeout":
            raise self.error(step, f"no answer from {path} (injected timeout)", "check the box")
        if kind == "http500":
            reply = DeviceReply(500, "Internal Server Error (injected)")
            if 500 in kwargs.get("allow", ()) or 500 in kwargs.get("expect", ()):
                return reply
            raise self.error(step, "HTTP 500 (injected)", "look at the box's logs")
        reply = await real_request(self, method, path, **kwargs)
        if kind == "truncated":
            return DeviceReply(reply.status, reply.text[: len(reply.text) // 2])
        if kind == "wrong_shape":
            return DeviceReply(reply.status, WRONG_SHAPE)
        return reply

    real_send = httpclient.send

    async def send(owner: Any, session: Any, step: str, method: str, url: str, **kw: Any) -> Any:
        kind = plan.take()
        if kind == "timeout":
            raise owner.error(
                step, "no answer (injected timeout)", "retry", reason="timeout", retryable=True
            )
        if kind == "http500":
            headers = CIMultiDictProxy(CIMultiDict({"Content-Type": "text/plain"}))
            return CAReply(500, headers, b"Internal Server Error (injected)")
        reply = await real_send(owner, session, step, method, url, **kw)
        if kind == "truncated":
            return CAReply(reply.status, reply.headers, reply.body[: len(reply.body) // 2])
        if kind == "wrong_shape":
            headers = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"}))
            return CAReply(reply.status, headers, WRONG_SHAPE.encode())
        return reply

    monkeypatch.setattr(HttpApi, "request", request)
    monkeypatch.setattr(est_module, "send", send)
    yield
