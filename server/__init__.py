"""The Deploy Console server: Socket.IO + HTTP on aiohttp, deployment logic, data.

Runs embedded in the console's event loop or alone as `deploy-server`. Never imports
Qt, `console/` or `agent/`; the wire contract lives in `protocol`.
"""
