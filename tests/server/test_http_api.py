"""The JSON API under /api: admin token, validated input, JSON errors."""

import aiohttp
import pytest

import protocol


@pytest.fixture
async def api(server):
    """An HTTP session that sends the admin token."""
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    async with aiohttp.ClientSession(base_url=server.url, headers=headers) as http:
        yield http


def _upload_form(content=b"echo hi\n", **fields):
    form = aiohttp.FormData()
    defaults = {"name": "Hello", "version": "1.0", "installer_type": "script"}
    for key, value in {**defaults, **fields}.items():
        form.add_field(key, str(value))
    form.add_field("file", content, filename="hello world.sh")
    return form


@pytest.mark.parametrize(
    "path", ["/api/devices", "/api/software", "/api/deployments", "/api/deployments/1"]
)
async def test_api_refuses_missing_token(server, path):
    async with aiohttp.ClientSession() as http, http.get(server.url + path) as response:
        assert response.status == 401
        assert (await response.json()) == {"error": "missing or wrong token"}


async def test_api_refuses_enrollment_token(server):
    headers = {"Authorization": f"Bearer {server.enrollment_token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(server.url + "/api/devices", headers=headers) as response,
    ):
        assert response.status == 401


async def test_devices_lists_registered_agents(api, agent_factory):
    agent = await agent_factory("agent-a", hostname="pc-hr")

    async with api.get("/api/devices") as response:
        devices = await response.json()

    assert response.status == 200
    assert [(d["id"], d["agent_id"], d["hostname"]) for d in devices] == [
        (agent.device_id, "agent-a", "pc-hr")
    ]


async def test_upload_adds_software(api, server):
    async with api.post("/api/software", data=_upload_form(timeout_s=120)) as response:
        software = await response.json()

    assert response.status == 201
    assert software["file_name"] == "hello world.sh"
    assert software["timeout_s"] == 120
    assert await server.list_software() == [software]


async def test_upload_over_limit_is_413_and_stores_nothing(server_factory):
    server = await server_factory(max_upload_bytes=1000)
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.post(
            server.url + "/api/software", data=_upload_form(b"x" * 5000)
        ) as response,
    ):
        body = await response.json()

    assert response.status == 413
    assert "limit" in body["error"]
    assert list(server.config.packages_dir.iterdir()) == []


async def test_upload_with_bad_fields_is_400_and_stores_nothing(api, server):
    form = _upload_form(installer_type="bat", timeout_s="soon")

    async with api.post("/api/software", data=form) as response:
        body = await response.json()

    assert response.status == 400
    assert "installer_type" in body["error"]
    assert await server.list_software() == []
    assert list(server.config.packages_dir.iterdir()) == []


async def test_upload_without_file_is_400(api):
    form = aiohttp.FormData({"name": "x", "installer_type": "exe"})
    form.add_field("padding", b"", filename="")  # forces multipart encoding

    async with api.post("/api/software", data=form) as response:
        assert response.status == 400


async def test_create_deployment_returns_it_with_targets(
    api, server, package, agent_factory
):
    agent = await agent_factory()
    body = {"software_ids": [package["id"]], "device_ids": [agent.device_id]}

    async with api.post("/api/deployments", json=body) as response:
        deployment = await response.json()

    assert response.status == 201
    assert deployment["software_ids"] == [package["id"]]
    assert deployment["targets"][0]["device_id"] == agent.device_id
    job = await agent.next(protocol.INSTALL_SOFTWARE)
    assert job["deployment_id"] == deployment["id"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"software_ids": [], "device_ids": [1]}, 400),
        ({"software_ids": [1], "device_ids": []}, 400),
        ({"software_ids": ["x"], "device_ids": [1]}, 400),
        ({"software_ids": [1]}, 400),
        ([1, 2], 400),
        ({"software_ids": [1], "device_ids": [1], "evil": True}, 400),
        ({"software_ids": [1], "device_ids": [424242]}, 404),
        ({"software_ids": [424242], "device_ids": [1]}, 404),
        ({"software_ids": [1], "device_ids": [True]}, 400),
        ({"software_ids": [1], "device_ids": ["1"]}, 400),
    ],
    ids=[
        "no-software",
        "no-devices",
        "id-not-number",
        "missing-devices",
        "not-an-object",
        "unknown-field",
        "unknown-device",
        "unknown-software",
        "boolean-id",
        "string-id",
    ],
)
async def test_bad_deployment_request_is_refused_and_stores_nothing(
    api, server, package, agent_factory, body, status
):
    await agent_factory()

    async with api.post("/api/deployments", json=body) as response:
        error = await response.json()

    assert response.status == status
    assert error["error"]
    assert await server.list_deployments() == []


async def test_invalid_json_is_400(api, server):
    async with api.post(
        "/api/deployments",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    ) as response:
        assert response.status == 400
        assert "JSON" in (await response.json())["error"]


async def test_unknown_deployment_is_404(api):
    async with api.get("/api/deployments/987") as response:
        assert response.status == 404
        assert (await response.json())["error"]


async def test_unknown_path_is_404_json(api):
    async with api.get("/api/nothing-here") as response:
        assert response.status == 404
        assert (await response.json())["error"]


async def test_cancel_through_api(api, server, package, agent_factory):
    agent = await agent_factory()
    deployment = await server.create_deployment([package["id"]], [agent.device_id])

    async with api.post(f"/api/deployments/{deployment['id']}/cancel") as response:
        result = await response.json()

    assert response.status == 200
    assert result["status"] == "cancelled"


async def test_cancel_finished_deployment_is_409(api, server, package, agent_factory):
    agent = await agent_factory()
    deployment = await server.create_deployment([package["id"]], [agent.device_id])
    await agent.report(deployment["id"], "completed", 100)

    async with api.post(f"/api/deployments/{deployment['id']}/cancel") as response:
        assert response.status == 409
    assert (await server.get_deployment(deployment["id"]))["status"] == "completed"


async def test_retry_through_api(api, server, package, agent_factory):
    agent = await agent_factory()
    deployment = await server.create_deployment([package["id"]], [agent.device_id])
    await agent.report(deployment["id"], "failed", 30, exit_code=1603)

    async with api.post(f"/api/deployments/{deployment['id']}/retry") as response:
        result = await response.json()

    assert response.status == 200
    assert result["targets"][0]["attempt"] == 2


async def test_retry_without_failures_is_409(api, server, package, agent_factory):
    agent = await agent_factory()
    deployment = await server.create_deployment([package["id"]], [agent.device_id])

    async with api.post(f"/api/deployments/{deployment['id']}/retry") as response:
        assert response.status == 409


async def test_deployment_name_with_nul_and_newline_is_stored_on_one_line(
    api, server, package, agent_factory
):
    agent = await agent_factory()
    body = {
        "software_ids": [package["id"]],
        "device_ids": [agent.device_id],
        "deployment_name": "Office\u0000\nINFO forged",
    }

    async with api.post("/api/deployments", json=body) as response:
        created = await response.json()

    assert response.status == 201, created
    assert created["deployment_name"] == "Office  INFO forged"


async def test_deeply_nested_json_is_400_not_500(api, server):
    body = b"[" * 100_000 + b"]" * 100_000

    async with api.post(
        "/api/deployments",
        data=body,
        headers={"Content-Type": "application/json"},
    ) as response:
        error = await response.json()

    assert response.status == 400
    assert "nested too deeply" in error["error"]
    assert await server.list_deployments() == []
