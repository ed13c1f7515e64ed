"""The HTTP side: the JSON API under `/api` and package downloads under `/packages`.

`/api` wants the admin token, `/packages/<sha256>` the enrollment token (or the admin
token), both as `Authorization: Bearer <token>`. Every error is JSON
`{"error": "..."}` with a fitting status; an unexpected exception is logged with its
traceback and answered 500 without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import unquote

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

import protocol
from server.errors import (
    ConflictError,
    DiskFullError,
    EnvironmentFault,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    ServerError,
)
from server.tokens import tokens_match

if TYPE_CHECKING:
    from server.app import DeployServer

log = logging.getLogger(__name__)

SERVER_KEY: web.AppKey[DeployServer] = web.AppKey("deploy_server")
MAX_JSON_BODY = 1024 * 1024
UPLOAD_FLUSH = 1024 * 1024
DOWNLOAD_CHUNK = 1024 * 1024
"""Bytes per read when a package is sent by copying (uvloop has no sendfile, so
aiohttp reads and writes the file in chunks): 1 MiB instead of aiohttp's 256 KiB
costs a quarter of the executor round trips per GB, and 32 MiB of buffers at 32
concurrent downloads."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def setup_routes(app: web.Application, server: DeployServer) -> None:
    app[SERVER_KEY] = server
    app.middlewares.append(_errors_as_json)
    app.router.add_get("/api/devices", list_devices)
    app.router.add_get("/api/software", list_software)
    app.router.add_post("/api/software", upload_software)
    app.router.add_get("/api/deployments", list_deployments)
    app.router.add_post("/api/deployments", create_deployment)
    app.router.add_get(r"/api/deployments/{deployment_id:\d{1,15}}", get_deployment)
    app.router.add_post(
        r"/api/deployments/{deployment_id:\d{1,15}}/cancel", cancel_deployment
    )
    app.router.add_post(
        r"/api/deployments/{deployment_id:\d{1,15}}/retry", retry_deployment
    )
    app.router.add_get("/packages/{sha256}", download_package)


# --- errors -------------------------------------------------------------------

_STATUS_FOR = (
    (NotFoundError, 404),
    (PayloadTooLargeError, 413),
    (ConflictError, 409),
    (InvalidRequestError, 400),
    (DiskFullError, 507),
    (EnvironmentFault, 503),
)


@web.middleware
async def _errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ServerError as exc:
        status = next((s for kind, s in _STATUS_FOR if isinstance(exc, kind)), 400)
        log.warning("%s %s refused (%s): %s", request.method, request.path, status, exc)
        return _error(status, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error(exc.status, exc.reason, headers=exc.headers)
    except asyncio.CancelledError:
        raise
    except ConnectionError as exc:  # the client went away mid-request
        log.info("%s %s abandoned by the client: %s", request.method, request.path, exc)
        return _error(400, "the connection was closed before the request was read")
    except Exception:  # a bug: log it whole, answer without the traceback
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, "internal server error")


def _error(status: int, message: str, headers: Any = None) -> web.Response:
    extra = {
        k: v for k, v in (headers or {}).items() if k.lower() == "www-authenticate"
    }
    return web.json_response({"error": message}, status=status, headers=extra or None)


def _require(request: web.Request, *tokens: str) -> None:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not any(tokens_match(given, t) for t in tokens):
        log.warning(
            "%s %s from %s refused: missing or wrong token",
            request.method,
            request.path,
            request.remote,
        )
        raise web.HTTPUnauthorized(
            reason="missing or wrong token", headers={"WWW-Authenticate": "Bearer"}
        )


def _admin(request: web.Request) -> DeployServer:
    server = request.app[SERVER_KEY]
    _require(request, server.admin_token)
    return server


# --- request bodies -----------------------------------------------------------

Id = protocol.PositiveId


class _CreateDeployment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    software_ids: Annotated[list[Id], Field(min_length=1, max_length=100)]
    device_ids: Annotated[list[Id], Field(min_length=1, max_length=10_000)]
    deployment_name: protocol.ShortText | None = None


class _SoftwareForm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[
        protocol.ShortText, StringConstraints(strip_whitespace=True, min_length=1)
    ]
    version: protocol.ShortText = ""
    installer_type: protocol.InstallerType
    install_args: Annotated[str, StringConstraints(max_length=protocol.MAX_ARGS)] = ""
    timeout_s: Annotated[int, Field(ge=1, le=86_400)] = 3600


def _invalid(what: str, exc: ValidationError) -> InvalidRequestError:
    problems = [
        f"{'.'.join(str(p) for p in e['loc']) or what}: {e['msg']}"
        for e in exc.errors(include_url=False, include_input=False)[:5]
    ]
    return InvalidRequestError(f"Invalid {what}: " + "; ".join(problems))


async def _json_body(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_JSON_BODY:
        raise PayloadTooLargeError("The request body is too large.")
    try:
        return await request.json()
    except ValueError as exc:
        raise InvalidRequestError("The request body is not valid JSON.") from exc
    except RecursionError:
        raise InvalidRequestError("The request body is nested too deeply.") from None


def _deployment_id(request: web.Request) -> int:
    return int(request.match_info["deployment_id"])


# --- handlers -----------------------------------------------------------------


async def list_devices(request: web.Request) -> web.Response:
    return web.json_response(await _admin(request).list_devices())


async def list_software(request: web.Request) -> web.Response:
    return web.json_response(await _admin(request).list_software())


async def list_deployments(request: web.Request) -> web.Response:
    return web.json_response(await _admin(request).list_deployments())


async def create_deployment(request: web.Request) -> web.Response:
    server = _admin(request)
    try:
        body = _CreateDeployment.model_validate(await _json_body(request))
    except ValidationError as exc:
        raise _invalid("deployment", exc) from None
    deployment = await server.create_deployment(
        body.software_ids, body.device_ids, deployment_name=body.deployment_name
    )
    return web.json_response(deployment, status=201)


async def get_deployment(request: web.Request) -> web.Response:
    server = _admin(request)
    return web.json_response(await server.get_deployment(_deployment_id(request)))


async def cancel_deployment(request: web.Request) -> web.Response:
    server = _admin(request)
    return web.json_response(await server.cancel_deployment(_deployment_id(request)))


async def retry_deployment(request: web.Request) -> web.Response:
    server = _admin(request)
    return web.json_response(await server.retry_deployment(_deployment_id(request)))


async def upload_software(request: web.Request) -> web.Response:
    """Multipart upload: fields of `_SoftwareForm` and one `file` part.

    TODO(server): a malformed multipart body (a part without headers) is answered
    500 from aiohttp's InvalidHeader instead of 400; and a package added here
    reaches a running console's library only at its next start (no event tells
    the consoles).

    The file is streamed to a temporary file inside the package store (never held
    in memory), refused past `ServerConfig.max_upload_bytes`, then stored as any
    other package.
    """
    server = _admin(request)
    if not request.content_type.startswith("multipart/"):
        raise InvalidRequestError("Send the installer as multipart/form-data.")

    fields: dict[str, str] = {}
    upload: Path | None = None
    file_name = ""
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if part.name == "file":
                if upload is not None:
                    raise InvalidRequestError("Send exactly one file.")
                file_name = _file_name(part.filename)
                upload = await _receive_file(server, part)
            elif part.name and len(fields) < 16:
                fields[part.name] = await part.text()
        if upload is None:
            raise InvalidRequestError("The upload has no 'file' part.")
        try:
            form = _SoftwareForm.model_validate(fields)
        except ValidationError as exc:
            raise _invalid("package", exc) from None

        software = await server.add_software(
            upload, file_name=file_name, move=True, **form.model_dump()
        )
    finally:
        if upload is not None:
            with contextlib.suppress(OSError):
                upload.unlink(missing_ok=True)
    return web.json_response(software, status=201)


def _file_name(given: str | None) -> str:
    """The base name of an uploaded file; percent-escapes (aiohttp clients) undone."""
    name = PurePosixPath(unquote(given or "").replace("\\", "/")).name
    return name[:255] or "installer"


async def _receive_file(server: DeployServer, part: Any) -> Path:
    """Stream one multipart part into the store's incoming folder, size-limited."""
    loop = asyncio.get_running_loop()
    limit = server.config.max_upload_bytes
    fd, path = server.packages.incoming_file()
    size = 0
    buffer = bytearray()
    try:
        with os.fdopen(fd, "wb") as fh:
            while chunk := await part.read_chunk(256 * 1024):
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(
                        f"The installer is larger than the limit of {limit} bytes."
                    )
                buffer += chunk
                if len(buffer) >= UPLOAD_FLUSH:
                    await loop.run_in_executor(None, fh.write, bytes(buffer))
                    buffer.clear()
            if buffer:
                await loop.run_in_executor(None, fh.write, bytes(buffer))
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink()
        if exc.errno == errno.ENOSPC:
            raise DiskFullError(
                "Not enough disk space to receive the installer."
            ) from exc
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    return path


async def download_package(request: web.Request) -> web.StreamResponse:
    """The package file, with Range support and Content-Length (aiohttp does both)."""
    server = request.app[SERVER_KEY]
    _require(request, server.enrollment_token, server.admin_token)
    path = server.packages.path_for(request.match_info["sha256"])
    if path is None:
        raise NotFoundError("No such package.")
    log.debug("package %s requested by %s", path.name, request.remote)
    return web.FileResponse(
        path,
        chunk_size=DOWNLOAD_CHUNK,
        headers={"Content-Type": "application/octet-stream"},
    )
