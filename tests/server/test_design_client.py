"""A client written from DESIGN.md alone (no server code, no test helpers) does the job.

It registers, receives its job, downloads the package with the enrollment token,
checks the sha256, reports the seed's sequence, and reads the completed deployment
back from the HTTP API.
"""

import asyncio
import hashlib
from urllib.parse import urljoin

import aiohttp
import socketio


async def test_design_client_completes_a_deployment(server, tmp_path):
    installer = tmp_path / "tool.sh"
    installer.write_bytes(b"#!/bin/sh\necho tool\n")
    software = await server.add_software(
        installer, name="Tool", version="3.1", installer_type="script"
    )
    jobs: asyncio.Queue = asyncio.Queue()
    client = socketio.AsyncClient(reconnection=False)
    client.on("install_software", jobs.put_nowait)
    await client.connect(
        server.url,
        auth={"role": "agent", "token": server.enrollment_token},
        transports=["websocket"],
    )
    answer = await client.call(
        "agent_register",
        {
            "agent_id": "design-agent",
            "hostname": "design-pc",
            "platform": "windows",
            "os_version": "10.0.19045",
            "agent_version": "1.0",
        },
        timeout=10,
    )
    assert answer["ok"] is True
    assert answer["room"] == "design-agent"
    device_id = answer["device_id"]

    admin = {"Authorization": f"Bearer {server.admin_token}"}
    async with aiohttp.ClientSession(headers=admin) as api:
        async with api.post(
            f"{server.url}/api/deployments",
            json={"software_ids": [software["id"]], "device_ids": [device_id]},
        ) as response:
            assert response.status == 201
            deployment_id = (await response.json())["id"]

        job = await asyncio.wait_for(jobs.get(), 10)
        [item] = job["software_list"]
        enrollment = {"Authorization": f"Bearer {server.enrollment_token}"}
        async with (
            aiohttp.ClientSession(headers=enrollment) as downloads,
            downloads.get(urljoin(server.url, item["url"])) as response,
        ):
            content = await response.read()
        assert hashlib.sha256(content).hexdigest() == item["sha256"]

        for status, progress in (
            ("in_progress", 0),
            ("installing", 50),
            ("completed", 100),
        ):
            ack = await client.call(
                "software_installation_status",
                {
                    "deployment_id": job["deployment_id"],
                    "device_id": job["device_id"],
                    "status": status,
                    "progress": progress,
                    "software_name": item["name"],
                },
                timeout=10,
            )
            assert ack["ok"] is True

        async with api.get(f"{server.url}/api/deployments/{deployment_id}") as response:
            deployment = await response.json()

    await client.disconnect()
    assert deployment["status"] == "completed"
    [target] = deployment["targets"]
    assert target["status"] == "success"
    assert target["progress_percent"] == 100
