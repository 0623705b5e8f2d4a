"""The metrics port: Prometheus ``/metrics``, HTTP health endpoints for probes that speak HTTP, and the live
dashboard.

Routes:

- ``GET /metrics``, ``GET /v2/health/live``, ``GET /v2/health/ready``
- ``GET /dashboard``: the page (``static/index.html``, never cached: it names its assets with a content digest)
- ``GET /dashboard/static/{name}``: the page's files and the vendored chart library, cached for a year
- ``GET /api/v1/dashboard``: the snapshot (:class:`infer.observability.dashboard.Dashboard`) as JSON
- ``GET /api/v1/dashboard/stream``: server-sent events, one ``snapshot`` event every ``stream_interval_s``,
  until the client goes away or the server stops

The dashboard routes answer 404 when the server runs without a dashboard.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from infer.observability.dashboard import Dashboard

__all__ = ["STATIC_DIR", "MetricsServer", "StaticFiles"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".LICENSE": "text/plain; charset=utf-8",
    ".NOTICE": "text/plain; charset=utf-8",
    ".LICENSE-d3": "text/plain; charset=utf-8",
}
_LONG_CACHE = "public, max-age=31536000, immutable"
_GZIP_MIN = 4096


@dataclass(frozen=True)
class _Asset:
    body: bytes
    gzipped: bytes | None
    content_type: str


class StaticFiles:
    """The dashboard's files, read once into memory (large text files also gzipped once); only plain files below
    ``root`` whose suffix has a known content type are served."""

    def __init__(self, root: Path = STATIC_DIR) -> None:
        self.root = root.resolve()
        self._assets: dict[str, _Asset | None] = {}
        self._digest = ""

    def get(self, name: str) -> _Asset | None:
        if name in self._assets:
            return self._assets[name]
        asset = self._load(name)
        if len(self._assets) < 256:  # names that do not exist are remembered too, up to a bound
            self._assets[name] = asset
        return asset

    def _load(self, name: str) -> _Asset | None:
        if not name or "\\" in name or "\x00" in name or name.startswith("/"):
            return None
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            return None
        suffix = "." + path.name.rsplit(".", 1)[-1] if "." in path.name else ""
        content_type = _TYPES.get(suffix)
        if content_type is None:
            return None
        body = path.read_bytes()
        zipped = gzip.compress(body, 6, mtime=0) if len(body) >= _GZIP_MIN and content_type.startswith("text") else None
        return _Asset(body, zipped, content_type)

    def digest(self) -> str:
        """A short digest of every served file: the page names its assets ``?v=<digest>`` so a new build is fetched
        even though assets are cached for a year."""
        if not self._digest:
            h = hashlib.sha256()
            for path in sorted(p for p in self.root.rglob("*") if p.is_file()):
                h.update(path.relative_to(self.root).as_posix().encode())
                h.update(path.read_bytes())
            self._digest = h.hexdigest()[:12]
        return self._digest


class MetricsServer:
    def __init__(self, registry: CollectorRegistry, live: Callable[[], bool], ready: Callable[[], bool],
                 dashboard: Dashboard | None = None, stream_interval_s: float = 2.0,
                 static: StaticFiles | None = None) -> None:
        self._registry = registry
        self._live = live
        self._ready = ready
        self._dashboard = dashboard
        self._interval = stream_interval_s
        self._static = static or StaticFiles()
        self._stopping = asyncio.Event()
        self._page_body: bytes | None = None  # index.html with its asset digest filled in
        self._frame = (b"", b"")  # (snapshot, the same as one server-sent event): framed once for every stream
        self._runner: web.AppRunner | None = None
        self.streams = 0  # open dashboard streams
        self.port = 0

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, request: web.Request) -> web.Response:
        ok = self._live() if request.path.endswith("live") else self._ready()
        return web.Response(status=200 if ok else 503, text="OK\n" if ok else "NOT READY\n")

    # ---- the dashboard ------------------------------------------------------------------------

    def _need_dashboard(self) -> Dashboard:
        if self._dashboard is None:
            raise web.HTTPNotFound(text="this server runs without a dashboard\n")
        return self._dashboard

    async def _page(self, _: web.Request) -> web.Response:
        self._need_dashboard()
        if self._page_body is None:
            asset = self._static.get("index.html")
            if asset is None:
                raise web.HTTPNotFound(text="dashboard files are missing from this installation\n")
            self._page_body = asset.body.replace(b"{{v}}", self._static.digest().encode())
        headers = {"Content-Type": _TYPES[".html"], "Cache-Control": "no-cache"}
        return web.Response(body=self._page_body, headers=headers)

    async def _slash(self, _: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently("../dashboard")  # the page's links are relative to /dashboard

    async def _file(self, request: web.Request) -> web.Response:
        self._need_dashboard()
        asset = self._static.get(request.match_info["name"])
        if asset is None:
            raise web.HTTPNotFound(text="no such file\n")
        headers = {"Content-Type": asset.content_type, "Cache-Control": _LONG_CACHE,
                   "X-Content-Type-Options": "nosniff", "Vary": "Accept-Encoding"}
        if asset.gzipped is not None and "gzip" in request.headers.get("Accept-Encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return web.Response(body=asset.gzipped, headers=headers)
        return web.Response(body=asset.body, headers=headers)

    async def _snapshot(self, _: web.Request) -> web.Response:
        body = await self._need_dashboard().encoded()
        return web.Response(body=body, headers={"Content-Type": "application/json", "Cache-Control": "no-store"})

    async def _event(self, dashboard: Dashboard) -> bytes:
        data = await dashboard.encoded()
        if self._frame[0] is not data:
            self._frame = (data, b"event: snapshot\ndata: " + data + b"\n\n")
        return self._frame[1]

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        dashboard = self._need_dashboard()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        self.streams += 1
        try:
            await resp.write(f"retry: {int(self._interval * 1000)}\n\n".encode())
            while not self._stopping.is_set():
                await resp.write(await self._event(dashboard))
                if request.transport is None or request.transport.is_closing():
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._interval)
        except (ConnectionResetError, ConnectionError):
            pass  # the page was closed
        finally:
            self.streams -= 1
        return resp

    # ---- lifecycle ----------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/v2/health/live", self._health)
        app.router.add_get("/v2/health/ready", self._health)
        app.router.add_get("/dashboard", self._page)
        app.router.add_get("/dashboard/", self._slash)
        app.router.add_get("/dashboard/static/{name:.+}", self._file)
        app.router.add_get("/api/v1/dashboard", self._snapshot)
        app.router.add_get("/api/v1/dashboard/stream", self._stream)
        self._stopping.clear()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        return self.port

    async def stop(self) -> None:
        self._stopping.set()  # open streams end their loop at once
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
