"""Sessions shared through Redis (`[cluster] redis_url`), so that a client whose replica died
resumes its session on any other replica behind the same load balancer.

What a replica keeps in Redis per session, under `streamrnn:session:<id>`:
- a hash: `meta` (options, tokens, when it opened: JSON), `owner` (the replica feeding it now),
  or, once the session can no longer be resumed, `gone` (the error code and message to answer);
- a list, the journal: every chunk of audio the session decoded ("a" + the bytes, exactly as the
  engine got them), and "e" + the reason when it ended.
A chunk is journaled after the engine decoded it and before its events or its `ack` reach anyone,
so whatever a client saw is in Redis. Another replica restores the session by replaying the
journal chunk by chunk into a fresh engine session: streaming equals offline and batched equals
alone, so the states, events and sequence numbers come out as the dead replica had them.

Redis down: the sessions go on in their replicas; a session whose chunk could not be journaled is
no longer shared (its journal has a gap) and is dropped from Redis once it is back.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from streamrnn.serve import telemetry

log = logging.getLogger("streamrnn.serve.cluster")
PREFIX = "streamrnn:session:"
REPLICAS = "streamrnn:replicas"  # sorted set: replica id -> until when it is known alive (unix time)
CHECK_EVERY_S = 2.0  # how often the keeper pings Redis and renews the live sessions' keys
ALIVE_FOR_S = 5 * CHECK_EVERY_S  # a replica not heard of for this long is taken for dead
TIMEOUT_S = 3.0  # per Redis call: past it Redis is taken for down (a slow Redis must not stall the audio)
GONE_TTL_S = 600.0  # how long a replica remembers why a session cannot be resumed

# KEYS: hash, journal. ARGV: replica, entry, ttl ms, meta ("" unless creating).
# 0: another replica owns the session; -1: Redis lost it (restarted, or expired while unreachable).
APPEND = """
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'meta', ARGV[4], 'owner', ARGV[1])
else
  local owner = redis.call('HGET', KEYS[1], 'owner')
  if not owner then return -1 end
  if owner ~= ARGV[1] then return 0 end
end
if ARGV[2] ~= '' then redis.call('RPUSH', KEYS[2], ARGV[2]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""
# KEYS: hash, journal. ARGV: replica. The journal, with the session now owned by the replica.
CLAIM = """
if not redis.call('HGET', KEYS[1], 'meta') then return false end
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
return redis.call('LRANGE', KEYS[2], 0, -1)
"""
# KEYS: hash, journal. ARGV: replica, gone (JSON), ttl ms. Only the owner (or nobody) marks it gone.
FORGET = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'gone', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class SessionMoved(Exception):
    """Another replica has taken the session over (its client resumed there)."""


@dataclass
class Record:
    """What Redis holds of a session: its meta, or why it is gone."""
    meta: dict | None = None
    gone: tuple[str, str] | None = None


def redacted(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    return parts._replace(netloc=parts.netloc.replace(":" + parts.password + "@", ":***@")).geturl()


def keys(session_id: str) -> list[str]:
    return [PREFIX + session_id, PREFIX + session_id + ":journal"]


class ClusterStore:
    """One replica's view of the shared sessions."""

    def __init__(self, url: str, ttl_s: float):
        """`ttl_s`: how long a session's keys outlive the last renewal (its replica's death)."""
        self.url = redacted(url)  # for the log
        self.replica = uuid.uuid4().hex
        self.ttl_ms = int(max(ttl_s, 1.0) * 1000)
        self.redis = aioredis.from_url(url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
        self.append_script = self.redis.register_script(APPEND)
        self.claim_script = self.redis.register_script(CLAIM)
        self.forget_script = self.redis.register_script(FORGET)
        self.up = False
        self.stale: set[str] = set()  # sessions to drop from Redis when it is back (their journal has a gap)
        telemetry.CLUSTER_REDIS_UP.set(0)

    async def check(self, live_ids: list[str]) -> bool:
        """Ping Redis, renew the keys of the sessions alive here, drop stale ones; note up or down."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.ping()
            now = time.time()
            pipe.zadd(REPLICAS, {self.replica: now + ALIVE_FOR_S})
            pipe.zremrangebyscore(REPLICAS, 0, now)
            for session_id in live_ids:
                for key in keys(session_id):
                    pipe.pexpire(key, self.ttl_ms)
            for session_id in self.stale:
                pipe.delete(*keys(session_id))
            await pipe.execute()
            self.stale.clear()
            self.mark(True)
        except (RedisError, OSError) as err:
            self.mark(False, err)
        return self.up

    def mark(self, up: bool, err: Exception | None = None) -> None:
        if up and not self.up:
            log.info("redis at %s is reachable: sessions are shared for cross-replica resume", self.url)
        elif not up and self.up:
            log.error("redis at %s is unreachable (%s): sessions go on in this replica, but cannot be resumed "
                      "on another one until it is back", self.url, err)
        self.up = up
        telemetry.CLUSTER_REDIS_UP.set(int(up))

    async def append(self, session_id: str, entry: bytes, meta: dict | None = None) -> bool:
        """Add to the journal (with `meta`: create the session). False: not shared (Redis is down,
        or fails now); raises SessionMoved when another replica owns the session."""
        if not self.up:
            self.stale.add(session_id)
            return False
        try:
            done = await self.append_script(keys(session_id), [self.replica, entry, self.ttl_ms,
                                                               json.dumps(meta) if meta else ""])
        except (RedisError, OSError) as err:
            self.mark(False, err)
            self.stale.add(session_id)
            return False
        if done == 0:
            raise SessionMoved(session_id)
        if done < 0:
            log.warning("session %s: redis no longer has it; it is not shared any more", session_id)
            return False
        telemetry.CLUSTER_JOURNAL_BYTES.inc(len(entry))
        return True

    async def load(self, session_id: str) -> Record | None:
        """The session's record, or None when Redis has none (or cannot be asked)."""
        if not self.up:
            return None
        try:
            meta, gone = await self.redis.hmget(keys(session_id)[0], ["meta", "gone"])
        except (RedisError, OSError) as err:
            self.mark(False, err)
            return None
        if gone:
            return Record(gone=tuple(json.loads(gone)))
        return Record(meta=json.loads(meta)) if meta else None

    async def claim(self, session_id: str) -> list[bytes] | None:
        """Take the session over: its journal (None: gone meanwhile, or Redis failed)."""
        try:
            return await self.claim_script(keys(session_id), [self.replica])
        except (RedisError, OSError) as err:
            self.mark(False, err)
            return None

    async def owner(self, session_id: str) -> str | None:
        """The replica that owns the session now (None: nobody, or Redis cannot say)."""
        if not self.up:
            return None
        try:
            owner = await self.redis.hget(keys(session_id)[0], "owner")
        except (RedisError, OSError) as err:
            self.mark(False, err)
            return None
        return owner.decode() if owner else None

    async def forget(self, session_id: str, code: str, message: str) -> None:
        """The session can no longer be resumed: any replica asked answers with this error."""
        if not self.up:
            self.stale.add(session_id)
            return
        try:
            await self.forget_script(keys(session_id), [self.replica, json.dumps([code, message]),
                                                        int(GONE_TTL_S * 1000)])
        except (RedisError, OSError) as err:
            self.mark(False, err)
            self.stale.add(session_id)

    async def keep(self, live_ids) -> None:
        """Run until cancelled: check Redis every CHECK_EVERY_S (`live_ids()`: the sessions to renew)."""
        while True:
            await self.check(live_ids())
            await asyncio.sleep(CHECK_EVERY_S)

    async def other_replicas(self) -> int:
        """How many other replicas are alive (0 also when Redis cannot say); this one is taken
        off the list, as it is stopping."""
        if not self.up:
            return 0
        try:
            await self.redis.zrem(REPLICAS, self.replica)
            return await self.redis.zcount(REPLICAS, time.time(), "+inf")
        except (RedisError, OSError) as err:
            self.mark(False, err)
            return 0

    async def close(self) -> None:
        await self.redis.aclose()
