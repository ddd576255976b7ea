"""Run moto's DynamoDB-compatible server on loopback, one request at a time.

``python -m aiolease.testing._server [--port N]`` prints ``aiolease-moto listening on URL``
once bound and serves until its standard input closes (so it never outlives its parent)
or it receives SIGTERM. With ``--stay-up`` it serves until SIGTERM or Ctrl-C only (what
``aiolease server`` does).

moto's own server handles requests on threads with no lock around a conditional
check-and-write, so two conditional writes on one item can both succeed: a test server
that does that would hide or fake exclusion bugs. Every request here runs under one lock,
which makes each conditional write atomic, as it is on DynamoDB.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

READY = "aiolease-moto listening on"


def serialized(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """A WSGI app that runs ``app`` for one request at a time, body included."""
    lock = threading.Lock()

    def wrapper(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with lock:
            return [b"".join(app(environ, start_response))]

    return wrapper


def make_server(host: str, port: int) -> Any:
    """A werkzeug server of moto's DynamoDB on ``host:port`` (0: a free port), not started.

    Raises ``OSError`` when the address cannot be bound (a port in use, say).
    """
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug import serving

    app = serialized(DomainDispatcherApplication(create_backend_app))
    return serving.make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: pick a free port")
    parser.add_argument(
        "--stay-up",
        action="store_true",
        help="keep serving when stdin closes or the parent exits (until SIGTERM or Ctrl-C)",
    )
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port)

    def stop(*_: object) -> None:
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    parent = os.getppid()

    def exit_with_parent() -> None:
        # When the parent dies, our stdin reaches EOF: exit rather than linger as an orphan.
        sys.stdin.read()
        stop()

    def watch_parent() -> None:
        # stdin alone is not enough: a process the parent forked keeps the pipe open after
        # the parent is gone. Being re-parented means the parent died.
        while os.getppid() == parent:
            time.sleep(1.0)
        stop()

    if not args.stay_up:
        threading.Thread(target=exit_with_parent, daemon=True).start()
        threading.Thread(target=watch_parent, daemon=True).start()
    print(f"{READY} http://{server.host}:{server.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
