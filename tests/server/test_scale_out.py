"""Scale-out (DESIGN mode 3): PostgreSQL as the database, Redis between servers.

These need the local PostgreSQL (127.0.0.1:5432, trust auth) and Redis
(127.0.0.1:6379); each test is skipped with the reason when one is unreachable.
"""

import secrets

import pytest

import protocol
from tests.helpers import ConsoleClient, FakeAgent, write_installer

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def postgres_url():
    """A fresh PostgreSQL database for this test, dropped afterwards."""
    asyncpg = pytest.importorskip("asyncpg")
    try:
        admin = await asyncpg.connect(PG_ADMIN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN}: {exc}")
    name = f"deploy_test_{secrets.token_hex(6)}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def redis_url():
    redis = pytest.importorskip("redis.asyncio")
    client = redis.from_url(REDIS)
    try:
        await client.ping()
    except (OSError, redis.RedisError) as exc:
        pytest.skip(f"Redis unreachable at {REDIS}: {exc}")
    finally:
        await client.aclose()
    return REDIS


async def _agent(server, agent_id):
    agent = FakeAgent(server.url, server.enrollment_token, agent_id)
    await agent.connect()
    assert (await agent.register())["ok"]
    return agent


async def test_postgres_schema_and_a_deployment_flow(
    postgres_url, server_factory, tmp_path
):
    server = await server_factory(database_url=postgres_url)
    agent = await _agent(server, "pg-agent")
    software = await server.add_software(
        write_installer(tmp_path / "a.sh"), name="A", installer_type="script"
    )
    deployment = await server.create_deployment([software["id"]], [agent.device_id])
    await agent.next(protocol.INSTALL_SOFTWARE)

    for status, progress in (
        ("in_progress", 0),
        ("installing", 50),
        ("completed", 100),
    ):
        assert (await agent.report(deployment["id"], status, progress))["ok"]

    result = await server.get_deployment(deployment["id"])
    assert result["status"] == "completed"
    assert result["targets"][0]["completed_at"] is not None
    await agent.close()


async def test_job_created_on_one_server_reaches_agent_on_another(
    postgres_url, redis_url, server_factory, tmp_path
):
    shared = {
        "database_url": postgres_url,
        "redis_url": redis_url,
        "redis_channel": f"deploy-test-{secrets.token_hex(4)}",
        "enrollment_token": "enroll",
        "admin_token": "admin",
    }
    front = await server_factory(**shared)
    back = await server_factory(**shared)
    console = ConsoleClient(back.url, back.admin_token)
    await console.connect()
    agent = await _agent(front, "roaming-agent")
    software = await back.add_software(
        write_installer(tmp_path / "a.sh"), name="A", installer_type="script"
    )

    deployment = await back.create_deployment([software["id"]], [agent.device_id])
    job = await agent.next(protocol.INSTALL_SOFTWARE)
    await agent.report(job["deployment_id"], "completed", 100)

    update = await console.next(protocol.SOFTWARE_DEPLOYMENT_UPDATE)
    while update["status"] != "success":
        update = await console.next(protocol.SOFTWARE_DEPLOYMENT_UPDATE)
    assert job["deployment_id"] == deployment["id"]
    assert (await back.get_deployment(deployment["id"]))["status"] == "completed"
    await agent.close()
    await console.close()


async def test_report_on_a_finished_target_is_refused_with_its_code(
    redis_url, server_factory, tmp_path
):
    server = await server_factory(
        redis_url=redis_url, redis_channel=f"deploy-test-{secrets.token_hex(4)}"
    )
    agent = await _agent(server, "code-agent")
    software = await server.add_software(
        write_installer(tmp_path / "a.sh"), name="A", installer_type="script"
    )
    deployment = await server.create_deployment([software["id"]], [agent.device_id])
    await agent.next(protocol.INSTALL_SOFTWARE)
    assert (await agent.report(deployment["id"], "completed", 100))["ok"]

    ack = await agent.report(deployment["id"], "installing", 100)

    assert ack["ok"] is False
    assert ack["code"] == protocol.TARGET_FINISHED
    await agent.close()
