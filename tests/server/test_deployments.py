"""Deployments reach their agents, and every status an agent reports is recorded."""

import logging

import pytest

import protocol
from tests.helpers import ConsoleClient, FakeAgent


async def _deploy(server, package, agent):
    deployment = await server.create_deployment([package["id"]], [agent.device_id])
    job = await agent.next(protocol.INSTALL_SOFTWARE)
    await server.wait_idle()  # the job is noted "sent to agent"
    return deployment, job


async def _target(server, deployment_id):
    [target] = (await server.get_deployment(deployment_id))["targets"]
    return target


async def test_job_lists_the_package_with_a_server_path_and_hash(
    server, package, agent_factory
):
    agent = await agent_factory()

    deployment, job = await _deploy(server, package, agent)

    assert job["deployment_id"] == deployment["id"]
    assert job["device_id"] == agent.device_id
    [item] = job["software_list"]
    assert item["url"] == f"/packages/{package['sha256']}"
    assert item["sha256"] == package["sha256"]
    assert item["size"] == package["size"]
    assert item["installer_type"] == "script"


async def test_one_deployment_to_many_agents_gives_each_its_own_job(
    server, package, agent_factory
):
    agents = [await agent_factory(f"agent-{n}") for n in range(1, 4)]

    deployment = await server.create_deployment(
        [package["id"]], [a.device_id for a in agents]
    )
    jobs = [await a.next(protocol.INSTALL_SOFTWARE) for a in agents]

    assert [j["device_id"] for j in jobs] == [a.device_id for a in agents]
    assert {j["deployment_id"] for j in jobs} == {deployment["id"]}
    assert jobs[0]["software_list"] == jobs[2]["software_list"]
    assert [item["sha256"] for item in jobs[1]["software_list"]] == [package["sha256"]]


async def test_deployment_carries_targets_and_software_ids(
    server, package, agent_factory
):
    agent = await agent_factory()

    deployment, _ = await _deploy(server, package, agent)

    assert deployment["status"] == "in_progress"
    assert deployment["software_ids"] == [package["id"]]
    assert [t["device_id"] for t in deployment["targets"]] == [agent.device_id]


async def test_offline_target_waits_with_a_message(server, package, agent_factory):
    agent = await agent_factory("agent-a")
    await agent.close()
    await server.wait_idle()

    deployment = await server.create_deployment([package["id"]], [agent.device_id])

    [target] = deployment["targets"]
    assert target["status"] == "pending"
    assert target["message"] == "waiting for agent to connect"


async def test_offline_deploy_arrives_once_on_registration(server, package):
    agent = FakeAgent(server.url, server.enrollment_token, "agent-a")
    await agent.connect()
    await agent.register()
    await agent.close()
    await server.wait_idle()
    deployment = await server.create_deployment([package["id"]], [agent.device_id])

    agent = FakeAgent(server.url, server.enrollment_token, "agent-a")
    await agent.connect()
    await agent.register()

    job = await agent.next(protocol.INSTALL_SOFTWARE)
    await server.wait_idle()
    await agent.sync()
    assert job["deployment_id"] == deployment["id"]
    assert agent.pending(protocol.INSTALL_SOFTWARE) == 0
    assert (await _target(server, deployment["id"]))["message"] == "sent to agent"
    await agent.close()


async def test_seed_sequence_ends_in_success(server, package, agent_factory):
    agent = await agent_factory()
    deployment, _ = await _deploy(server, package, agent)
    seen = []

    for status, progress in (
        ("in_progress", 0),
        ("installing", 50),
        ("completed", 100),
    ):
        ack = await agent.report(deployment["id"], status, progress)
        assert ack == {"ok": True}
        target = await _target(server, deployment["id"])
        seen.append((target["status"], target["progress_percent"]))

    assert seen == [("in_progress", 0), ("in_progress", 50), ("success", 100)]
    assert target["started_at"] is not None
    assert target["completed_at"] is not None
    assert (await server.get_deployment(deployment["id"]))["status"] == "completed"


async def test_started_at_is_set_once(server, package, agent_factory):
    agent = await agent_factory()
    deployment, _ = await _deploy(server, package, agent)
    await agent.report(deployment["id"], "in_progress", 0)
    first = (await _target(server, deployment["id"]))["started_at"]

    await agent.report(deployment["id"], "installing", 60)

    assert (await _target(server, deployment["id"]))["started_at"] == first


async def test_progress_never_goes_back(server, package, agent_factory):
    agent = await agent_factory()
    deployment, _ = await _deploy(server, package, agent)
    await agent.report(deployment["id"], "installing", 70)

    await agent.report(deployment["id"], "downloading", 20)

    assert (await _target(server, deployment["id"]))["progress_percent"] == 70


async def test_failed_report_keeps_exit_code_and_log_tail(
    server, package, agent_factory
):
    agent = await agent_factory()
    deployment, _ = await _deploy(server, package, agent)

    await agent.report(
        deployment["id"],
        "failed",
        50,
        exit_code=1603,
        message="installer failed with exit code 1603",
        log_tail="MainEngineThread is returning 1603",
    )

    target = await _target(server, deployment["id"])
    assert target["status"] == "failed"
    assert target["exit_code"] == 1603
    assert target["log_tail"] == "MainEngineThread is returning 1603"
    assert (await server.get_deployment(deployment["id"]))["status"] == "failed"


async def test_completed_with_failures_counts_as_failed(server, package, agent_factory):
    agent = await agent_factory()
    deployment, _ = await _deploy(server, package, agent)

    await agent.report(deployment["id"], "completed", 100, completed=0, failed=1)

    assert (await _target(server, deployment["id"]))["status"] == "failed"


async def test_reboot_required_is_recorded(server, package, agent_factory):
    agent = await agent_factory()
    deployment, _ = await _deploy(server, package, agent)

    await agent.report(
        deployment["id"], "completed", 100, exit_code=3010, reboot_required=True
    )

    target = await _target(server, deployment["id"])
    assert target["status"] == "success"
    assert target["reboot_required"] is True


async def test_finished_target_refuses_further_reports(server, package, agent_factory):
    agent = await agent_factory()
    deployment, _ = await _deploy(server, package, agent)
    await agent.report(deployment["id"], "completed", 100)

    ack = await agent.report(deployment["id"], "installing", 100)

    assert ack == {
        "ok": False,
        "error": "Target already finished.",
        "code": protocol.TARGET_FINISHED,
    }
    assert (await _target(server, deployment["id"]))["status"] == "success"


async def test_status_for_another_device_is_refused(server, package, agent_factory):
    owner = await agent_factory("agent-a")
    other = await agent_factory("agent-b")
    deployment, _ = await _deploy(server, package, owner)

    ack = await other.report(
        deployment["id"], "completed", 100, device_id=owner.device_id
    )

    assert ack["ok"] is False
    assert (await _target(server, deployment["id"]))["status"] == "pending"


async def test_status_for_unknown_deployment_is_refused(server, agent_factory):
    agent = await agent_factory()

    ack = await agent.report(999, "completed", 100)

    assert ack["ok"] is False
    assert await server.list_deployments() == []


async def test_status_before_registering_is_refused(server, package, agent_factory):
    owner = await agent_factory("agent-a")
    deployment, _ = await _deploy(server, package, owner)
    stranger = FakeAgent(server.url, server.enrollment_token, "agent-x")
    await stranger.connect()

    ack = await stranger.report(deployment["id"], "completed", 100, owner.device_id)

    assert ack["ok"] is False
    assert (await _target(server, deployment["id"]))["status"] == "pending"
    await stranger.close()


BAD_STATUSES = {
    "not-an-object": "completed",
    "missing-status": {"deployment_id": 1, "progress": 5},
    "unknown-status": {"deployment_id": 1, "status": "exploded", "progress": 5},
    "progress-over-100": {"deployment_id": 1, "status": "installing", "progress": 101},
    "progress-negative": {"deployment_id": 1, "status": "installing", "progress": -1},
    "progress-text": {"deployment_id": 1, "status": "installing", "progress": "half"},
    "deployment-id-zero": {"deployment_id": 0, "status": "installing", "progress": 5},
    "deployment-id-list": {"deployment_id": [1], "status": "installing"},
    "message-huge": {"deployment_id": 1, "status": "failed", "message": "x" * 100_000},
    "exit-code-huge": {"deployment_id": 1, "status": "failed", "exit_code": 2**70},
}


@pytest.mark.parametrize("payload", BAD_STATUSES.values(), ids=BAD_STATUSES)
async def test_malformed_status_is_refused_and_changes_nothing(
    server, package, agent_factory, payload
):
    agent = await agent_factory()
    deployment, _ = await _deploy(server, package, agent)
    if isinstance(payload, dict):
        payload = {"device_id": agent.device_id, **payload}

    ack = await agent.call(protocol.SOFTWARE_INSTALLATION_STATUS, payload)

    assert ack["ok"] is False
    target = await _target(server, deployment["id"])
    assert (target["status"], target["progress_percent"]) == ("pending", 0)


async def test_download_progress_fills_first_half_of_the_package(
    server, package, agent_factory
):
    agent = await agent_factory()
    deployment, _ = await _deploy(server, package, agent)

    ack = await agent.call(
        protocol.SOFTWARE_DOWNLOAD_PROGRESS,
        {
            "deployment_id": deployment["id"],
            "device_id": agent.device_id,
            "software_name": package["name"],
            "progress": 60,
        },
    )

    assert ack == {"ok": True}
    target = await _target(server, deployment["id"])
    assert (target["status"], target["progress_percent"]) == ("in_progress", 30)


async def test_download_progress_for_another_device_is_refused(
    server, package, agent_factory
):
    owner = await agent_factory("agent-a")
    other = await agent_factory("agent-b")
    deployment, _ = await _deploy(server, package, owner)

    ack = await other.call(
        protocol.SOFTWARE_DOWNLOAD_PROGRESS,
        {
            "deployment_id": deployment["id"],
            "device_id": owner.device_id,
            "software_name": package["name"],
            "progress": 60,
        },
    )

    assert ack["ok"] is False
    assert (await _target(server, deployment["id"]))["progress_percent"] == 0


async def test_consoles_see_target_then_deployment_updates(
    server, package, agent_factory
):
    console = ConsoleClient(server.url, server.admin_token)
    await console.connect()
    agent = await agent_factory()
    deployment, _ = await _deploy(server, package, agent)

    await agent.report(deployment["id"], "completed", 100)

    updates = [
        p
        for e, p in console.history
        if e == protocol.SOFTWARE_DEPLOYMENT_UPDATE and p["status"] == "success"
    ]
    done = await console.next(protocol.DEPLOYMENT_UPDATE)
    while done["status"] != "completed":
        done = await console.next(protocol.DEPLOYMENT_UPDATE)
    assert updates[0]["device_id"] == agent.device_id
    assert updates[0]["progress"] == 100
    assert done["counts"] == {
        "pending": 0,
        "in_progress": 0,
        "success": 1,
        "failed": 0,
        "cancelled": 0,
        "total": 1,
    }
    await console.close()


async def test_listener_hears_persisted_updates(server, package, agent_factory):
    agent = await agent_factory()
    deployment, _ = await _deploy(server, package, agent)
    heard = []
    server.add_listener(lambda event, payload: heard.append((event, payload)))

    await agent.report(deployment["id"], "installing", 50)

    event, payload = heard[0]
    assert event == protocol.SOFTWARE_DEPLOYMENT_UPDATE
    assert payload["progress"] == 50
    assert (await _target(server, deployment["id"]))["progress_percent"] == 50


async def test_unsubscribed_listener_hears_nothing(server, package, agent_factory):
    agent = await agent_factory()
    deployment, _ = await _deploy(server, package, agent)
    heard = []
    unsubscribe = server.add_listener(lambda event, payload: heard.append(event))

    unsubscribe()
    await agent.report(deployment["id"], "installing", 50)

    assert heard == []


async def test_cancel_stops_open_targets_and_tells_the_agent(
    server, package, agent_factory
):
    agent = await agent_factory()
    deployment, _ = await _deploy(server, package, agent)

    result = await server.cancel_deployment(deployment["id"])

    cancel = await agent.next(protocol.CANCEL_DEPLOYMENT)
    assert cancel == {"deployment_id": deployment["id"], "device_id": agent.device_id}
    assert result["status"] == "cancelled"
    assert result["targets"][0]["status"] == "cancelled"
    assert result["targets"][0]["completed_at"] is not None


async def test_cancelled_target_refuses_reports(server, package, agent_factory):
    agent = await agent_factory()
    deployment, _ = await _deploy(server, package, agent)
    await server.cancel_deployment(deployment["id"])

    ack = await agent.report(deployment["id"], "completed", 100)

    assert ack["ok"] is False
    assert (await _target(server, deployment["id"]))["status"] == "cancelled"


async def test_retry_sends_failed_target_again_as_new_attempt(
    server, package, agent_factory
):
    agent = await agent_factory()
    deployment, _ = await _deploy(server, package, agent)
    await agent.report(deployment["id"], "installing", 80)
    await agent.report(deployment["id"], "failed", 80, exit_code=1603)

    result = await server.retry_deployment(deployment["id"])

    job = await agent.next(protocol.INSTALL_SOFTWARE)
    assert job["attempt"] == 2
    assert result["status"] == "in_progress"
    target = result["targets"][0]
    assert (target["status"], target["progress_percent"]) == ("pending", 0)
    assert target["exit_code"] is None


async def test_report_for_earlier_attempt_is_refused(server, package, agent_factory):
    agent = await agent_factory()
    deployment, _ = await _deploy(server, package, agent)
    await agent.report(deployment["id"], "failed", 10)
    await server.retry_deployment(deployment["id"])

    ack = await agent.report(deployment["id"], "completed", 100, attempt=1)

    assert ack["ok"] is False
    assert (await _target(server, deployment["id"]))["status"] == "pending"


async def test_report_for_earlier_attempt_is_refused_with_its_code(
    server, package, agent_factory
):
    agent = await agent_factory()
    deployment, _ = await _deploy(server, package, agent)
    await agent.report(deployment["id"], "failed", 10)
    await server.retry_deployment(deployment["id"])

    ack = await agent.report(deployment["id"], "completed", 100, attempt=1)

    assert ack["code"] == protocol.STALE_ATTEMPT
    assert "earlier attempt" in ack["error"]


async def test_deployment_to_two_devices_waits_for_both(server, package, agent_factory):
    first = await agent_factory("agent-a")
    second = await agent_factory("agent-b")
    deployment = await server.create_deployment(
        [package["id"]], [first.device_id, second.device_id]
    )
    await first.next(protocol.INSTALL_SOFTWARE)
    await second.next(protocol.INSTALL_SOFTWARE)

    await first.report(deployment["id"], "completed", 100)
    midway = await server.get_deployment(deployment["id"])
    await second.report(deployment["id"], "failed", 40, exit_code=1)

    assert midway["status"] == "in_progress"
    assert midway["progress"] == 50
    final = await server.get_deployment(deployment["id"])
    assert final["status"] == "failed"
    assert final["counts"]["success"] == 1
    assert final["counts"]["failed"] == 1


async def test_new_deployment_answers_with_every_target_pending_by_hostname(
    server, package, agent_factory
):
    second = await agent_factory("agent-b", hostname="WS-B")
    first = await agent_factory("agent-a", hostname="WS-A")

    deployment = await server.create_deployment(
        [package["id"]], [second.device_id, first.device_id]
    )

    assert [t["hostname"] for t in deployment["targets"]] == ["WS-A", "WS-B"]
    assert deployment["counts"]["pending"] == deployment["counts"]["total"] == 2
    assert deployment == await server.get_deployment(deployment["id"]) | {
        "targets": deployment["targets"]
    }
    for agent in (first, second):
        job = await agent.next(protocol.INSTALL_SOFTWARE)
        assert job["deployment_id"] == deployment["id"]


async def test_finished_deployment_is_logged_with_readable_counts(
    server, package, agent_factory, caplog
):
    caplog.set_level(logging.INFO, logger="server")
    agents = [await agent_factory() for _ in range(3)]
    deployment = await server.create_deployment(
        [package["id"]], [a.device_id for a in agents]
    )
    for agent in agents:
        await agent.next(protocol.INSTALL_SOFTWARE)
        await agent.report(deployment["id"], "completed", 100)
    await server.wait_idle()

    finished = [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith(f"deployment {deployment['id']} completed")
    ]
    assert finished == [
        f"deployment {deployment['id']} completed: "
        "3 succeeded, 0 failed, 0 cancelled of 3"
    ]


async def test_cancelled_deployment_is_logged_with_readable_counts(
    server, package, agent_factory, caplog
):
    caplog.set_level(logging.INFO, logger="server")
    agent = await agent_factory()
    deployment = await server.create_deployment([package["id"]], [agent.device_id])

    await server.cancel_deployment(deployment["id"])

    assert (
        f"deployment {deployment['id']} cancelled: "
        "0 succeeded, 0 failed, 1 cancelled of 1"
    ) in [r.getMessage() for r in caplog.records]
