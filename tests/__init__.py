"""Tests mirror the source tree; `tests.helpers` holds the shared real-socket
clients."""
