"""HTTP-01 from a standalone responder, for sites that route port 80 of the names to the
daemon: serves /.well-known/acme-challenge/TOKEN while a challenge is open."""

from __future__ import annotations

from aiohttp import web

from expressway_certd.renewers.ca.base import ConnectorBase, Presentation


class HTTP01Responder:
    """An aiohttp listener started on the first challenge and stopped by `aclose`."""

    challenge_type = "http-01"

    def __init__(self, owner: ConnectorBase, host: str, port: int) -> None:
        self._owner = owner
        self.host = host
        self.port = port
        self._answers: dict[str, str] = {}
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        return f"HTTP01Responder({self.host}:{self.port})"

    async def _serve(self, request: web.Request) -> web.Response:
        answer = self._answers.get(request.match_info["token"])
        if answer is None:
            raise web.HTTPNotFound()
        return web.Response(text=answer, content_type="application/octet-stream")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/acme-challenge/{token}", self._serve)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise self._owner.error(
                "http-01 responder",
                f"cannot listen on {self.host}:{self.port} ({exc.strerror})",
                "free the port, give the service CAP_NET_BIND_SERVICE, or set http01_listen",
                reason="http01_listen",
            ) from None
        self._runner = runner

    async def present(self, item: Presentation) -> None:
        self._answers[item.token] = item.key_authorization
        if self._runner is None:
            await self._start()

    async def cleanup(self, item: Presentation) -> None:
        self._answers.pop(item.token, None)

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
