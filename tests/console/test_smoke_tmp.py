from tests.console.conftest import until


async def test_registering_agent_becomes_a_device_row(session, agents):
    model = session.window.devices
    agent = await agents("agent-1", "PC-ACCOUNTING-01")
    await until(lambda: model.row_of(agent.device_id) is not None, model.rowsInserted)
    assert model.hostname(agent.device_id) == "PC-ACCOUNTING-01"
