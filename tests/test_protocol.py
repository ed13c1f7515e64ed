"""The shared wire contract: statuses map as DESIGN.md says, bad payloads fail."""

import pytest

import protocol as p


@pytest.mark.parametrize(
    ("agent_status", "failed", "expected"),
    [
        ("in_progress", None, "in_progress"),
        ("downloading", None, "in_progress"),
        ("installing", None, "in_progress"),
        ("completed", None, "success"),
        ("completed", 0, "success"),
        ("completed", 1, "failed"),
        ("failed", None, "failed"),
    ],
)
def test_agent_status_maps_to_target_status(agent_status, failed, expected):
    assert p.target_status_for(p.AgentStatus(agent_status), failed) == expected


def test_terminal_target_statuses_are_success_failed_cancelled():
    terminal = {s.value for s in p.TargetStatus if s.terminal}
    assert terminal == {"success", "failed", "cancelled"}


def test_register_payload_keeps_extra_fields_for_forward_compatibility():
    reg = p.parse_payload(
        p.AgentRegister,
        {"agent_id": "pc-01", "hostname": "PC-01", "platform": "windows", "x": 1},
    )
    assert reg.agent_id == "pc-01"
    assert reg.model_extra == {"x": 1}


@pytest.mark.parametrize(
    "payload",
    [
        None,
        "agent_register",
        [1, 2],
        {},
        {"agent_id": "", "hostname": "h", "platform": "linux"},
        {"agent_id": "../etc", "hostname": "h", "platform": "linux"},
        {"agent_id": "a" * 129, "hostname": "h", "platform": "linux"},
        {"agent_id": "a", "hostname": "h", "platform": "beos"},
        {"agent_id": "a", "hostname": "h" * 10_000, "platform": "linux"},
        {"agent_id": {"$ne": 1}, "hostname": "h", "platform": "linux"},
        {f"k{i}": i for i in range(1000)},
    ],
)
def test_malformed_register_payloads_raise_payload_error(payload):
    with pytest.raises(p.PayloadError):
        p.parse_payload(p.AgentRegister, payload)


def test_payload_error_does_not_echo_the_hostile_value():
    junk = "<script>" * 5000
    with pytest.raises(p.PayloadError) as err:
        p.parse_payload(p.AgentRegister, {"agent_id": junk, "hostname": "h"})
    assert "<script>" not in str(err.value)
    assert len(str(err.value)) < 500


@pytest.mark.parametrize(
    "payload",
    [
        {"deployment_id": 1, "device_id": 1, "status": "done", "progress": 5},
        {"deployment_id": 1, "device_id": 1, "status": "installing", "progress": 101},
        {"deployment_id": 1, "device_id": 1, "status": "installing", "progress": -1},
        {"deployment_id": 0, "device_id": 1, "status": "installing", "progress": 1},
        {"deployment_id": "1; DROP TABLE", "device_id": 1, "status": "failed"},
    ],
)
def test_malformed_status_payloads_raise_payload_error(payload):
    with pytest.raises(p.PayloadError):
        p.parse_payload(p.InstallationStatus, payload)


def test_acknowledgements_have_the_documented_shape():
    assert p.ack_ok(room="pc-01") == {"ok": True, "room": "pc-01"}
    assert p.ack_error("nope") == {"ok": False, "error": "nope"}


@pytest.mark.parametrize("bad_id", [True, "1", 1.0, "1; DROP TABLE"])
def test_ids_must_be_json_integers(bad_id):
    with pytest.raises(p.PayloadError):
        p.parse_payload(
            p.InstallationStatus,
            {"deployment_id": bad_id, "device_id": 1, "status": "installing"},
        )


def test_progress_may_not_be_a_boolean():
    with pytest.raises(p.PayloadError):
        p.parse_payload(
            p.DownloadProgress,
            {
                "deployment_id": 1,
                "device_id": 1,
                "software_name": "x",
                "progress": True,
            },
        )


def test_a_host_name_cannot_forge_a_second_log_line():
    reg = p.parse_payload(
        p.AgentRegister,
        {"agent_id": "pc", "hostname": "PC\nINFO admin logged in", "platform": "linux"},
    )
    assert "\n" not in reg.hostname
    assert reg.hostname == "PC INFO admin logged in"


def test_nul_in_a_status_message_is_replaced_not_refused():
    status = p.parse_payload(
        p.InstallationStatus,
        {
            "deployment_id": 1,
            "device_id": 1,
            "status": "failed",
            "message": "exit 4",
            "log_tail": "line 1\n\x00\x00line 2",
        },
    )
    assert status.log_tail == "line 1\n\ufffd\ufffdline 2"
