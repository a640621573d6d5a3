"""One TLS client context for every httpx client of the process.

httpx builds a fresh ``ssl.SSLContext`` for each client it creates (the certifi bundle loaded
again, tens of milliseconds each); the inbound-token validator's key fetches, the Graph client
and the recording downloads would each pay it, on the cold path. A context is safe to share
between clients and loops, so the process builds one, on first use, the way httpx would
(``httpx.create_ssl_context``: certifi, or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set).
"""

from __future__ import annotations

import functools
import ssl


@functools.cache
def client_ssl_context() -> ssl.SSLContext:
    """The process's verifying TLS client context (pass it as ``httpx.AsyncClient(verify=...)``)."""
    import httpx

    return httpx.create_ssl_context()
