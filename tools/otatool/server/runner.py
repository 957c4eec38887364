"""Running the campaign server: the TLS context from the configured PEM
files, the server in the foreground (`otatool server`) with a socket that
cannot be bound reported in one line, and ServerThread, the server on its
own event loop in a thread for tests and scripts.
"""
import asyncio
import ssl
import threading

from aiohttp import web

from otatool.serve import cannot_listen
from otatool.server.app import make_app
from otatool.server.appkeys import CONFIG


def ssl_context(cfg):
    """The server's SSLContext for cfg's tls_cert and tls_key; None: HTTP."""
    if not cfg["tls_cert"]:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cfg["tls_cert"], cfg["tls_key"])
    return ctx


def run_forever(app, cfg, context):
    """Serve `app` on cfg's host and port until interrupted; CliFailure in
    one line when the socket cannot be bound."""
    try:
        web.run_app(app, host=cfg["host"], port=cfg["port"], ssl_context=context,
                    backlog=cfg["backlog"],
                    print=lambda s: print(s, flush=True))
    except OSError as e:  # in use, not an address of this host, no such name
        raise cannot_listen(cfg["host"], cfg["port"], e)


class ServerThread:
    """The server on its own event loop in a thread, for tests and scripts:

        with ServerThread({"db": path, "port": 0}) as srv:
            urlopen(srv.url + "/ota/check?...")

    Binds 127.0.0.1 unless config["host"] says otherwise; port 0 picks a
    free port (srv.port)."""

    def __init__(self, config):
        self.config = dict(config)
        self.config.setdefault("host", "127.0.0.1")
        self.config.setdefault("port", 0)
        self.port = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self):
        scheme = "https" if self.config.get("tls_cert") else "http"
        return "%s://%s:%d" % (scheme, self.config["host"], self.port)

    def _run(self):
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except BaseException as e:  # handed to start()
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    async def _start(self):
        app = make_app(self.config)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        cfg = app[CONFIG]
        site = web.TCPSite(self._runner, cfg["host"], cfg["port"], ssl_context=ssl_context(cfg),
                           backlog=cfg["backlog"])
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.app = app

    def start(self):
        self._thread.start()
        self._ready.wait(30)
        if self._error:
            raise self._error
        return self

    def stop(self):
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
