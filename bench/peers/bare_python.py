"""Bare python-socketio on aiohttp with the contract's handler shape, storing nothing.

The "bare library" reference of issue 7: the same events, acknowledgements, rooms and
HTTP endpoints as the Deploy Console server, with every state kept in dicts and no
database. The Node.js peer (`peers/node/server.js`) has exactly the same shape.

    python -m bench.peers.bare_python --port P --enrollment-token T --admin-token A \
        [--package FILE]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import socketio
from aiohttp import web

from protocol import (
    AGENT_REGISTER,
    CONSOLES_ROOM,
    DEPLOYMENT_UPDATE,
    DEVICE_UPDATE,
    INSTALL_SOFTWARE,
    REGISTRATION_SUCCESS,
    SOFTWARE_DEPLOYMENT_UPDATE,
    SOFTWARE_DOWNLOAD_PROGRESS,
    SOFTWARE_INSTALLATION_STATUS,
    AgentRegister,
    DownloadProgress,
    InstallationStatus,
    PayloadError,
    ack_error,
    ack_ok,
    parse_payload,
    target_status_for,
)

logger = logging.getLogger(__name__)

TERMINAL = {"success", "failed", "cancelled"}


class BarePeer:
    """In-memory devices and deployments behind a python-socketio AsyncServer."""

    def __init__(
        self, enrollment_token: str, admin_token: str, package: Path | None
    ) -> None:
        self.enrollment_token = enrollment_token
        self.admin_token = admin_token
        self.sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins=[])
        self.app = web.Application()
        self.sio.attach(self.app)
        self.devices: dict[str, dict[str, Any]] = {}
        self.agent_of_sid: dict[str, str] = {}
        self.deployments: dict[int, dict[str, Any]] = {}
        self.software: list[dict[str, Any]] = []
        self.package = package
        if package is not None:
            self.software.append(_describe_package(package))
        self.sio.on("connect", self.on_connect)
        self.sio.on("disconnect", self.on_disconnect)
        self.sio.on(AGENT_REGISTER, self.on_agent_register)
        self.sio.on(SOFTWARE_INSTALLATION_STATUS, self.on_installation_status)
        self.sio.on(SOFTWARE_DOWNLOAD_PROGRESS, self.on_download_progress)
        self.app.router.add_get("/api/devices", self.get_devices)
        self.app.router.add_get("/api/software", self.get_software)
        self.app.router.add_post("/api/deployments", self.post_deployment)
        self.app.router.add_get("/api/deployments/{id}", self.get_deployment)
        self.app.router.add_get("/packages/{sha256}", self.get_package)
        self.app.router.add_post("/bench/gc", self.post_gc)

    async def on_connect(self, sid: str, environ: Any, auth: Any) -> None:
        role = auth.get("role") if isinstance(auth, dict) else None
        token = auth.get("token") if isinstance(auth, dict) else None
        if role == "agent" and token == self.enrollment_token:
            return
        if role == "console" and token == self.admin_token:
            await self.sio.enter_room(sid, CONSOLES_ROOM)
            return
        raise socketio.exceptions.ConnectionRefusedError("bad role or token")

    async def on_disconnect(self, sid: str, *_: Any) -> None:
        agent_id = self.agent_of_sid.pop(sid, None)
        if agent_id in self.devices:
            self.devices[agent_id]["online"] = False

    async def on_agent_register(self, sid: str, data: Any) -> dict[str, Any]:
        try:
            payload = parse_payload(AgentRegister, data)
        except PayloadError as exc:
            return ack_error(str(exc))
        bound = self.agent_of_sid.get(sid)
        if bound is not None and bound != payload.agent_id:
            return ack_error("this connection is registered as another agent")
        device = self.devices.get(payload.agent_id)
        if device is None:
            device = {"id": len(self.devices) + 1, "agent_id": payload.agent_id}
            self.devices[payload.agent_id] = device
        device.update(
            hostname=payload.hostname, online=True, last_seen=time.time(), sid=sid
        )
        self.agent_of_sid[sid] = payload.agent_id
        await self.sio.enter_room(sid, payload.agent_id)
        answer = ack_ok(
            agent_id=payload.agent_id, device_id=device["id"], room=payload.agent_id
        )
        await self.sio.emit(REGISTRATION_SUCCESS, answer, to=sid)
        await self.sio.emit(
            DEVICE_UPDATE,
            {
                "device_id": device["id"],
                "agent_id": payload.agent_id,
                "hostname": payload.hostname,
                "online": True,
            },
            room=CONSOLES_ROOM,
        )
        return answer

    async def on_installation_status(self, sid: str, data: Any) -> dict[str, Any]:
        try:
            report = parse_payload(InstallationStatus, data)
        except PayloadError as exc:
            return ack_error(str(exc))
        deployment = self.deployments.get(report.deployment_id)
        target = deployment and deployment["targets"].get(report.device_id)
        if target is None:
            return ack_error("no such target")
        device = self.devices.get(self.agent_of_sid.get(sid, ""))
        if device is None or device["id"] != report.device_id:
            return ack_error("not your target")
        if target["status"] in TERMINAL:
            return ack_ok()
        target["status"] = target_status_for(report.status, report.failed).value
        target["progress_percent"] = max(target["progress_percent"], report.progress)
        await self.sio.emit(
            SOFTWARE_DEPLOYMENT_UPDATE,
            {
                "deployment_id": report.deployment_id,
                "device_id": report.device_id,
                "status": target["status"],
                "progress": target["progress_percent"],
                "message": report.message,
            },
            room=CONSOLES_ROOM,
        )
        if target["status"] in TERMINAL:
            await self._after_terminal(deployment)
        return ack_ok()

    async def _after_terminal(self, deployment: dict[str, Any]) -> None:
        deployment["done"] += 1
        if deployment["done"] < len(deployment["targets"]):
            return
        statuses = {t["status"] for t in deployment["targets"].values()}
        deployment["status"] = "failed" if "failed" in statuses else "completed"
        await self.sio.emit(
            DEPLOYMENT_UPDATE,
            {
                "deployment_id": deployment["id"],
                "status": deployment["status"],
                "progress": 100,
                "counts": {s: 0 for s in statuses},
            },
            room=CONSOLES_ROOM,
        )

    async def on_download_progress(self, sid: str, data: Any) -> dict[str, Any]:
        try:
            parse_payload(DownloadProgress, data)
        except PayloadError as exc:
            return ack_error(str(exc))
        return ack_ok()

    def _admin(self, request: web.Request) -> None:
        if request.headers.get("Authorization") != f"Bearer {self.admin_token}":
            raise web.HTTPUnauthorized(
                text='{"error": "admin token required"}',
                content_type="application/json",
            )

    async def get_devices(self, request: web.Request) -> web.Response:
        self._admin(request)
        rows = [
            {k: v for k, v in d.items() if k != "sid"} for d in self.devices.values()
        ]
        return web.json_response(rows)

    async def get_software(self, request: web.Request) -> web.Response:
        self._admin(request)
        return web.json_response(self.software)

    async def post_deployment(self, request: web.Request) -> web.Response:
        self._admin(request)
        body = await request.json()
        software = [s for s in self.software if s["id"] in body["software_ids"]]
        deployment_id = len(self.deployments) + 1
        targets = {
            device_id: {
                "device_id": device_id,
                "status": "pending",
                "progress_percent": 0,
            }
            for device_id in body["device_ids"]
        }
        deployment = {
            "id": deployment_id,
            "status": "in_progress",
            "targets": targets,
            "done": 0,
        }
        self.deployments[deployment_id] = deployment
        by_id = {d["id"]: d for d in self.devices.values()}
        items = [
            {
                "software_id": s["id"],
                "name": s["name"],
                "version": s["version"],
                "file_name": s["file_name"],
                "url": f"/packages/{s['sha256']}",
                "sha256": s["sha256"],
                "size": s["size"],
                "installer_type": s["installer_type"],
                "install_args": "",
                "timeout_s": 600,
            }
            for s in software
        ]
        for device_id in targets:
            device = by_id.get(device_id)
            if device is None:
                continue
            await self.sio.emit(
                INSTALL_SOFTWARE,
                {
                    "deployment_id": deployment_id,
                    "device_id": device_id,
                    "software_list": items,
                },
                room=device["agent_id"],
            )
        return web.json_response(self._deployment_json(deployment), status=201)

    async def get_deployment(self, request: web.Request) -> web.Response:
        self._admin(request)
        deployment = self.deployments.get(int(request.match_info["id"]))
        if deployment is None:
            raise web.HTTPNotFound(
                text='{"error": "no such deployment"}', content_type="application/json"
            )
        return web.json_response(self._deployment_json(deployment))

    @staticmethod
    def _deployment_json(deployment: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": deployment["id"],
            "status": deployment["status"],
            "targets": list(deployment["targets"].values()),
        }

    async def post_gc(self, request: web.Request) -> web.Response:
        """A full collection before the benchmarks read the resident memory, as the
        Node peer does; blocks the loop for its few milliseconds (a bench route)."""
        self._admin(request)
        return web.json_response({"ok": True, "collected": gc.collect()})

    async def get_package(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.enrollment_token}":
            raise web.HTTPUnauthorized()
        for item in self.software:
            if item["sha256"] == request.match_info["sha256"]:
                return web.FileResponse(item["path"])
        raise web.HTTPNotFound()


def _describe_package(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return {
        "id": 1,
        "name": path.stem,
        "version": "1.0",
        "file_name": path.name,
        "sha256": digest.hexdigest(),
        "size": path.stat().st_size,
        "installer_type": "script",
        "path": str(path),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.bare_python")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--enrollment-token", default=os.environ.get("DEPLOY_ENROLLMENT_TOKEN")
    )
    parser.add_argument("--admin-token", default=os.environ.get("DEPLOY_ADMIN_TOKEN"))
    parser.add_argument("--package", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from bench.fleet import raise_fd_limit

    raise_fd_limit()
    peer = BarePeer(args.enrollment_token, args.admin_token, args.package)
    web.run_app(peer.app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
