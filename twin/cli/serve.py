"""``gridtwin serve``: the HTTP service (OGC API Features and more) over a store."""

from __future__ import annotations

import argparse
import logging

from twin.cli._common import add_store_option, masked, open_store, store_url

NAME = "serve"
HELP = "serve the twin over HTTP: OGC API Features, API keys and tokens (docs/api.md)"
DESCRIPTION = (
    "Serve the twin over HTTP (FastAPI + uvicorn): OGC API – Features at /ogc, health at "
    "/healthz and /readyz. Each answer is what the caller's role may see (an API key or token "
    "acts as its user; without one, the public), masked and audited by twin.trust."
)
EPILOG = """\
examples:
  gridtwin serve                                the demo store on http://127.0.0.1:8090
  gridtwin serve --store postgresql+psycopg://twin:twin@127.0.0.1/twin --port 9000
  gridtwin serve --host 0.0.0.0                 every network (put a TLS proxy in front)
  ogrinfo -ro -so OAPIF:http://127.0.0.1:8090/ogc
(also: gridtwin-serve …)

Listens on TWIN_API_HOST (127.0.0.1: this machine only) unless --host says otherwise.
Access logs: one JSON line per request on stderr. exit codes: 0 stopped, 2 bad input, 1 failure
"""


def configure(p: argparse.ArgumentParser) -> None:
    add_store_option(p)
    p.add_argument("--host", default=None,
                   help="address to listen on (default TWIN_API_HOST: 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default TWIN_API_PORT: 8090)")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from twin import settings
    from twin.api.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    host = args.host or settings.get("api_host")
    port = args.port or settings.get("api_port")
    store = open_store(args)
    app = create_app(store)
    app.router.on_shutdown.append(store.close)
    logging.getLogger(__name__).info(
        "GridTwin API on http://%s:%d/ogc over %s", host, port, masked(store_url(args)))
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``gridtwin-serve``."""
    from twin.cli import run_command

    return run_command(NAME, argv)
