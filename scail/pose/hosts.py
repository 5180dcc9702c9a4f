"""Whether a download host answers: a TCP connect to the URL's host and port, no data sent.

The pose weights (nlf's files, MediaPipe's heavy landmark model) are fetched on first use; an
offline machine is told so before any work, not after a download times out."""

from __future__ import annotations

import socket
from urllib.parse import urlparse


def reachable(url: str, timeout_s: float = 2.0) -> bool:
    """Can `url`'s host be connected to (its port, else 443 for https and 80 for http)?"""
    parts = urlparse(url)
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False
