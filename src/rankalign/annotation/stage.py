"""`rankalign annotate`: validate, bind, then serve the page (or print `--agreement`)."""

from __future__ import annotations

import importlib.util
import ipaddress
import socket
import sys

from rankalign.annotation.config import AnnotateConfig
from rankalign.errors import UserError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), or a one-line error (port in use, unknown
    host) before anything is served."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as e:
        raise UserError(f"cannot resolve host '{host}': {e.strerror}", field="host") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)  # connections queue from now on, before uvicorn's loop starts
    except OSError as e:
        sock.close()
        raise UserError(f"cannot serve on {host}:{port}: {e.strerror}", field="port") from None
    return sock


def url(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def run(cfg: AnnotateConfig) -> dict:
    """Serve until Ctrl-C (every answer is already on disk); with `agreement`, print it."""
    if cfg.agreement is not None:
        from rankalign.annotation.agreement import agreement, print_agreement

        report = agreement(cfg.agreement)
        print_agreement(report)
        return report

    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(
            f"the page needs {' and '.join(missing)}: pip install 'rankalign[annotate]'"
        )
    from rankalign.annotation.store import Store

    store = Store(cfg.input, cfg.out, cfg.annotator, cfg.seed, cfg.max_rows)  # reads only
    import uvicorn

    from rankalign.annotation.server import make_app

    loopback = is_loopback(cfg.host)
    sock = bind(cfg.host, cfg.port)
    if not loopback:
        print(
            f"rankalign annotate: warning: --host {cfg.host} exposes the page and every "
            "response to the network, without a login",
            file=sys.stderr,
        )
    progress, dropped = store.progress(), sum(store.report.dropped.values())
    left_out = f" ({dropped} rows with fewer than 2 responses left out)" if dropped else ""
    print(
        f"rankalign annotate: {progress['total']} prompts{left_out}, {progress['done']} ranked "
        f"by {cfg.annotator}; open {url(sock, cfg.host)} (Ctrl-C to stop; rerun to resume)",
        flush=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            make_app(store, loopback=loopback),
            log_level="warning",
            access_log=False,
            lifespan="off",
            limit_concurrency=64,
            timeout_keep_alive=5,
        )
    )
    server.run(sockets=[sock])  # returns on Ctrl-C / SIGTERM, after open requests finish
    progress = store.progress()
    print(
        f"rankalign annotate: stopped; {progress['done']} of {progress['total']} prompts ranked "
        f"by {cfg.annotator}, in {cfg.out} (rerun to resume)",
        flush=True,
    )
    return progress
