"""Transport errors of the hot-path upstream client, named by the phase that failed.

    UpstreamTransportError
    ├── UpstreamConnectError     could not connect or finish TLS: nothing was sent
    ├── UpstreamReadError        the connection broke or closed before or during the response
    └── UpstreamProtocolError    the peer violated HTTP/1.1

`pooler.upstream.http1` maps httptools parse errors, OSError and trio stream errors into
this tree at its edge (`raise ... from exc`); callers decide from the class whether failing
over is safe (a connect error never reached the upstream) and map it to `pooler.errors` for
clients.
"""

from __future__ import annotations


class UpstreamTransportError(Exception):
    """Base of every transport failure talking to an upstream origin."""


class UpstreamConnectError(UpstreamTransportError):
    """Could not open the TCP connection or complete the TLS handshake."""


class UpstreamReadError(UpstreamTransportError):
    """The connection broke, or the peer closed it, before the response was complete."""


class UpstreamProtocolError(UpstreamTransportError):
    """The peer sent something that is not valid HTTP/1.1."""
