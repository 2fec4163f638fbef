"""Serves pkilint's REST app on a kernel-picked loopback port for the tests.

The socket is bound and its port printed before pkilint is imported (which
takes half a minute of CPU), so a caller knows the URL at once and its
first connections wait in the backlog until the app is ready.
"""
import socket

import uvicorn

s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(64)
print(s.getsockname()[1], flush=True)

from pkilint.rest import app  # noqa: E402 (after the port is known)

uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[s])
