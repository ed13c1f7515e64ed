"""Which agent each Socket.IO connection (sid) speaks for, and who is connected now.

The deployment executor asks `is_connected` and the socket layer sends to the agent's
room; both go through one `AgentRegistry`, so "connected" always means "bound and in
its room". A new registration of an agent replaces its old binding: the old sid no
longer acts as that agent and its later disconnect does not mark the device offline.
"""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger(__name__)


class AgentRegistry(Protocol):
    """The connected agents, by sid and by agent id. Every method runs on the loop."""

    async def bind(self, sid: str, agent_id: str) -> str | None:
        """Bind `sid` to `agent_id`; return the sid it replaces, if any."""

    async def unbind(self, sid: str) -> str | None:
        """Forget `sid`; return its agent id if `sid` was that agent's current sid."""

    async def sid_for(self, agent_id: str) -> str | None: ...

    async def agent_for(self, sid: str) -> str | None: ...

    async def is_connected(self, agent_id: str) -> bool: ...

    async def close(self) -> None: ...


class InMemoryAgentRegistry:
    """The registry of one server process (embedded and headless modes)."""

    def __init__(self) -> None:
        self._sid_by_agent: dict[str, str] = {}
        self._agent_by_sid: dict[str, str] = {}

    async def bind(self, sid: str, agent_id: str) -> str | None:
        old_sid = self._sid_by_agent.get(agent_id)
        if old_sid is not None and old_sid != sid:
            self._agent_by_sid.pop(old_sid, None)
        self._sid_by_agent[agent_id] = sid
        self._agent_by_sid[sid] = agent_id
        return old_sid if old_sid != sid else None

    async def unbind(self, sid: str) -> str | None:
        agent_id = self._agent_by_sid.pop(sid, None)
        if agent_id is None or self._sid_by_agent.get(agent_id) != sid:
            return None
        del self._sid_by_agent[agent_id]
        return agent_id

    async def sid_for(self, agent_id: str) -> str | None:
        return self._sid_by_agent.get(agent_id)

    async def agent_for(self, sid: str) -> str | None:
        return self._agent_by_sid.get(sid)

    async def is_connected(self, agent_id: str) -> bool:
        return agent_id in self._sid_by_agent

    async def close(self) -> None:
        self._sid_by_agent.clear()
        self._agent_by_sid.clear()


# Compare-and-delete: drop the agent's key only if it still points at this sid.
_UNBIND_SCRIPT = """
local agent = redis.call('GET', KEYS[1])
redis.call('DEL', KEYS[1])
if not agent then return false end
local agent_key = ARGV[1] .. agent
if redis.call('GET', agent_key) == ARGV[2] then
  redis.call('DEL', agent_key)
  return agent
end
return false
"""

# Swap the agent's sid atomically; return the sid it replaced.
_BIND_SCRIPT = """
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
if old and old ~= ARGV[1] then
  redis.call('DEL', ARGV[3] .. old)
  return old
end
return false
"""


class RedisAgentRegistry:
    """The registry shared by several server processes (scale-out mode).

    TODO(scale-out): bindings of a server process that dies without stopping stay in
    Redis until its agents reconnect elsewhere; give keys a TTL refreshed by the
    owning process.
    """

    def __init__(self, url: str, prefix: str = "deploy:") -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.from_url(url, decode_responses=True)
        self._agent_prefix = f"{prefix}agent:"
        self._sid_prefix = f"{prefix}sid:"
        self._bind = self._redis.register_script(_BIND_SCRIPT)
        self._unbind = self._redis.register_script(_UNBIND_SCRIPT)

    async def bind(self, sid: str, agent_id: str) -> str | None:
        old_sid = await self._bind(
            keys=[self._agent_prefix + agent_id, self._sid_prefix + sid],
            args=[sid, agent_id, self._sid_prefix],
        )
        return old_sid or None

    async def unbind(self, sid: str) -> str | None:
        agent_id = await self._unbind(
            keys=[self._sid_prefix + sid], args=[self._agent_prefix, sid]
        )
        return agent_id or None

    async def sid_for(self, agent_id: str) -> str | None:
        return await self._redis.get(self._agent_prefix + agent_id)

    async def agent_for(self, sid: str) -> str | None:
        return await self._redis.get(self._sid_prefix + sid)

    async def is_connected(self, agent_id: str) -> bool:
        return bool(await self._redis.exists(self._agent_prefix + agent_id))

    async def close(self) -> None:
        await self._redis.aclose()
