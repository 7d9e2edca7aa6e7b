"""The tenants' shared state: `shared.*` and `limit.allow` (docs/scripting.md, *Shared state*).

Two stores with the same semantics, both answering `routing.script_run.Effects.shared` and
`.limit` for a tenant:

* `RedisStore` (CHISTONE_REDIS_URL set): every worker of every node shares the state. Each
  operation is ONE round trip, a Lua script run on Redis with EVALSHA, so each is atomic
  and reads the clock of Redis (`TIME`), the one clock all nodes share. A worker keeps one
  pipelined connection (`_Pipelined`: hiredis parses the replies) rather than redis-py's
  client with a connection per call: the same round trip for a quarter of the CPU (bench/
  RESULTS.md, issue 15). Redis unreachable or slower than CHISTONE_REDIS_TIMEOUT_MS: shared.*
  answer "unavailable", limit.allow lets the request through (`degraded`) or refuses it
  (`fail = "closed"`); each such answer is counted (`on_unavailable`, exported as
  `chistone_shared_state_unavailable_total`) and logged once per interval; after a failure
  Redis is skipped for a short back-off, so a dead Redis costs nothing per request, then
  tried again: service resumes by itself.
* `LocalStore`: the same in this process's memory (no CHISTONE_REDIS_URL: per worker; and
  private to one run for dry runs, script tests and shadows, routing.stubs).

Key layout in Redis (one tenant's keys share the hash tag `{slug}`, so every script touches
one Redis Cluster slot; slugs are `[-a-zA-Z0-9_]`, never a brace or a colon):

    <prefix>:{slug}:v         HASH  key -> value ("s" + bytes, or "n" + a number)
    <prefix>:{slug}:x         ZSET  key -> expiry (ms, Redis clock), keys with a TTL only
    <prefix>:{slug}:b         STRING  bytes held (sum of len(key) + len(value)), for the quota
    <prefix>:{slug}:l:<key>   ZSET  limit.allow's log: one member per allowed request, scored
                              by its time (us); expires with its window
    <prefix>:{slug}:seq       STRING  a counter naming those members

The tenant's namespace is the hash's own key space and the `l:` prefix: whatever bytes a
script's key holds, they are a field of the tenant's hash or follow its prefix, so no key of
another tenant can be named. Expired keys are removed inside the scripts (the expiry ZSET is
purged before every operation, all of it when the quota would refuse), so the key and byte
counts the quota checks are exact, not "eventually" right as keyspace expiry would make them.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import hiredis

from luascripts.engine.build import fast_constructor
from luascripts.engine.effects import LimitAnswer, LimitCheck, SharedAnswer, SharedOp

log = logging.getLogger("chistone.shared_state")

DEFAULT_MAX_KEYS = 10_000
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
NUMBER_LIMIT = 2 ** 53  # integers beyond this are not exact in Redis's Lua (doubles)
BACKOFF_S = 1.0  # after a failure, Redis is not asked for this long
LOG_INTERVAL_S = 10.0  # at most one warning per interval while Redis fails
MAX_IN_FLIGHT = 10_000  # calls waiting on one connection; beyond, it is dropped and reopened

_new_limit_answer = fast_constructor(LimitAnswer)  # per rate-limited request
OnUnavailable = Callable[[str, str], None]  # (tenant slug, op: get|set|incr|delete|limit)


@dataclass(frozen=True, slots=True)
class Quota:
    """What one tenant may keep in `shared`: keys, and bytes of keys plus values."""

    max_keys: int = DEFAULT_MAX_KEYS
    max_bytes: int = DEFAULT_MAX_BYTES


class Store(Protocol):
    async def shared(self, tenant: str, op: SharedOp) -> SharedAnswer: ...

    async def limit(self, tenant: str, check: LimitCheck) -> LimitAnswer: ...

    async def close(self) -> None: ...


# -- values ---------------------------------------------------------------------------------
def encode(value: str | int | float) -> str:
    """A value as stored: "s" + the string, or "n" + the number (latin-1 text: one char per
    byte, as strings cross the Lua boundary)."""
    if isinstance(value, str):
        return "s" + value
    return "n" + _number_text(value)


def decode(stored: str) -> str | int | float:
    if stored[:1] == "n":
        return _number(stored[1:])
    return stored[1:]


def _number_text(n: int | float) -> str:
    if isinstance(n, float) and n.is_integer() and abs(n) < NUMBER_LIMIT:
        n = int(n)
    return str(n) if isinstance(n, int) else repr(n)


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        value = float(text)
        return int(value) if value.is_integer() and abs(value) < NUMBER_LIMIT else value


def _reset_s(us: float) -> float:
    return round(us / 1_000_000, 3) if us > 0 else 0.0


# -- in memory --------------------------------------------------------------------------------
class _Space:
    """One tenant's state in memory."""

    __slots__ = ("bytes", "expiry", "limits", "limit_ops", "values")

    def __init__(self) -> None:
        self.values: dict[str, tuple[str, float | None]] = {}  # key -> (encoded, expires at)
        self.expiry: list[tuple[float, str]] = []  # heap; stale entries skipped when popped
        self.bytes = 0
        self.limits: dict[str, tuple[deque[float], int]] = {}  # key -> (log, window)
        self.limit_ops = 0


class LocalStore:
    """`shared` and `limit` in this process's memory, with RedisStore's semantics. Never
    awaits: the dry run drives it without an event loop (routing.stubs.run_sync)."""

    def __init__(self, quota: Quota | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.quota = quota or Quota()
        self.clock = clock
        self._spaces: dict[str, _Space] = {}

    def _space(self, tenant: str) -> _Space:
        space = self._spaces.get(tenant)
        if space is None:
            space = self._spaces[tenant] = _Space()
        return space

    def _drop(self, space: _Space, key: str) -> None:
        stored, _exp = space.values.pop(key)
        space.bytes -= len(key) + len(stored)

    def _purge(self, space: _Space, now: float) -> None:
        heap = space.expiry
        while heap and heap[0][0] <= now:
            at, key = heapq.heappop(heap)
            entry = space.values.get(key)
            if entry is not None and entry[1] == at:
                self._drop(space, key)

    def _put(self, space: _Space, key: str, stored: str, expires: float | None) -> bool:
        old = space.values.get(key)
        keys = len(space.values) + (old is None)
        size = space.bytes - (len(key) + len(old[0]) if old else 0) + len(key) + len(stored)
        if keys > self.quota.max_keys or size > self.quota.max_bytes:
            return False
        space.values[key] = (stored, expires)
        space.bytes = size
        if expires is not None:
            heap = space.expiry
            heapq.heappush(heap, (expires, key))
            if len(heap) > 4 * len(space.values) + 1024:  # mostly entries of replaced values
                space.expiry = [(at, k) for k, (_v, at) in space.values.items() if at is not None]
                heapq.heapify(space.expiry)
        return True

    async def shared(self, tenant: str, op: SharedOp) -> SharedAnswer:
        space = self._space(tenant)
        now = self.clock()
        self._purge(space, now)
        key, action = op.key, op.action
        entry = space.values.get(key)
        if action == "get":
            return SharedAnswer(None if entry is None else decode(entry[0]))
        if action == "delete":
            if entry is not None:
                self._drop(space, key)
            return SharedAnswer(True)
        if action == "set":
            assert op.value is not None
            expires = None if op.ttl_s is None else now + op.ttl_s
            stored = encode(op.value)
            if not self._put(space, key, stored, expires):
                return SharedAnswer(error="quota")
            return SharedAnswer(True)
        if action == "incr":
            current: int | float = 0
            expires = None if op.ttl_s is None else now + op.ttl_s
            if entry is not None:
                expires = entry[1]  # ttl_s applies when incr creates the key
                if entry[0][:1] != "n":  # a string value, even "5": set it as a number
                    return SharedAnswer(error="not_a_number")
                current = _number(entry[0][1:])
            result = current + (op.delta or 0)
            if abs(result) >= NUMBER_LIMIT:
                return SharedAnswer(error="not_a_number")
            stored = encode(result)
            if not self._put(space, key, stored, expires):
                return SharedAnswer(error="quota")
            return SharedAnswer(decode(stored))
        raise ValueError(f"unknown shared-state action {action!r}")

    async def limit(self, tenant: str, check: LimitCheck) -> LimitAnswer:
        space = self._space(tenant)
        now = self.clock()
        window = check.window_s
        entry = space.limits.get(check.key)
        if entry is None or entry[1] != window:
            entry = space.limits[check.key] = (deque(), window)
        log_ = entry[0]
        while log_ and log_[0] <= now - window:
            log_.popleft()
        allowed = len(log_) < check.rate
        if allowed:
            log_.append(now)
        count = len(log_)
        reset = 0.0
        if count >= check.rate:
            reset = (log_[0] + window - now) * 1_000_000
        space.limit_ops += 1
        if space.limit_ops % 4096 == 0:  # forget the logs of keys no longer used
            for key in [k for k, (q, w) in space.limits.items() if not q or q[-1] <= now - w]:
                del space.limits[key]
        return LimitAnswer(allowed, check.rate, max(0, check.rate - count), _reset_s(reset))

    async def close(self) -> None:
        self._spaces.clear()


# -- Redis --------------------------------------------------------------------------------------
# Redis runs Lua 5.1 with double numbers. Effects replication (the default since Redis 5,
# the only mode since 7) lets a script write after reading TIME.
_PRELUDE = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
"""

SHARED_SCRIPT = _PRELUDE + """
local V, X, B = KEYS[1], KEYS[2], KEYS[3]
local action, key = ARGV[1], ARGV[2]
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function drop(k)
  local old = redis.call('HGET', V, k)
  if old then
    redis.call('HDEL', V, k)
    redis.call('DECRBY', B, #k + #old)
  end
  redis.call('ZREM', X, k)
end
local function purge(all)
  local expired
  if all then
    expired = redis.call('ZRANGEBYSCORE', X, '-inf', now)
  else
    expired = redis.call('ZRANGEBYSCORE', X, '-inf', now, 'LIMIT', 0, 64)
  end
  for i = 1, #expired do drop(expired[i]) end
end
purge(false)
local exp = redis.call('ZSCORE', X, key)
if exp and tonumber(exp) <= now then drop(key); exp = false end
local old = redis.call('HGET', V, key)
if action == 'get' then
  if old then return {1, old} end
  return {0}
end
if action == 'delete' then
  if old then drop(key) end
  return {1, 'n1'}
end
local stored, expires
if action == 'set' then
  stored = ARGV[3]
  if ARGV[4] ~= '' then expires = now + tonumber(ARGV[4]) end
else -- incr
  local n = 0
  if old then
    if string.sub(old, 1, 1) ~= 'n' then return {-2} end
    n = tonumber(string.sub(old, 2))
    expires = exp and tonumber(exp) or nil
  elseif ARGV[4] ~= '' then
    expires = now + tonumber(ARGV[4])
  end
  n = n + tonumber(ARGV[5])
  if n >= 9007199254740992 or n <= -9007199254740992 then return {-2} end
  if n == math.floor(n) then stored = 'n' .. string.format('%d', n)
  else stored = 'n' .. string.format('%.17g', n) end
end
local max_keys, max_bytes = tonumber(ARGV[6]), tonumber(ARGV[7])
local function fits()
  local keys = redis.call('HLEN', V)
  local size = tonumber(redis.call('GET', B) or '0')
  if old then size = size - #key - #old else keys = keys + 1 end
  return keys <= max_keys and size + #key + #stored <= max_bytes
end
if not fits() then
  purge(true)
  old = redis.call('HGET', V, key)
  if not fits() then return {-1} end
end
if old then redis.call('DECRBY', B, #key + #old) end
redis.call('HSET', V, key, stored)
redis.call('INCRBY', B, #key + #stored)
if expires then redis.call('ZADD', X, expires, key) else redis.call('ZREM', X, key) end
if action == 'set' then return {1, 'n1'} end
return {1, stored}
"""

LIMIT_SCRIPT = _PRELUDE + """
local L, SEQ = KEYS[1], KEYS[2]
local rate, window = tonumber(ARGV[1]), tonumber(ARGV[2]) * 1000000
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', L, '-inf', now - window)
local count = redis.call('ZCARD', L)
local allowed = 0
if count < rate then
  redis.call('ZADD', L, now, redis.call('INCR', SEQ))
  redis.call('PEXPIRE', L, math.ceil(window / 1000))
  count = count + 1
  allowed = 1
end
local reset = 0
if count >= rate then
  local oldest = redis.call('ZRANGE', L, 0, 0, 'WITHSCORES')
  reset = tonumber(oldest[2]) + window - now
end
return {allowed, count, reset}
"""


@dataclass(frozen=True, slots=True)
class _Script:
    text: str
    sha: str

    @classmethod
    def of(cls, text: str) -> _Script:
        return cls(text, hashlib.sha1(text.encode()).hexdigest())  # EVALSHA's name for it


_SHARED, _LIMIT = _Script.of(SHARED_SCRIPT), _Script.of(LIMIT_SCRIPT)


class RedisReplyError(Exception):
    """Redis answered with an error (a bug of ours, or a Redis that refuses scripts)."""


def _pack(args: tuple[Any, ...]) -> bytes:
    """A command in RESP. str arguments are Lua strings' bytes as latin-1 text."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if not isinstance(arg, bytes):
            arg = (arg if isinstance(arg, str) else str(arg)).encode("latin-1")
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class _Pipelined(asyncio.Protocol):
    """One connection to Redis shared by all of a worker's requests, pipelined: commands
    issued in the same turn of the event loop go out in one write, and Redis answers in
    order, so each reply is matched to the oldest waiting call. Replies are parsed by hiredis
    (redis-py's parser). Per operation this costs a fraction of a client with a connection
    per call (one write and one wake-up serve many requests), and one connection per worker
    is all Redis sees. A call that gets no reply within the timeout fails with TimeoutError;
    its late reply is matched and dropped. A lost connection fails every waiting call; the
    next call opens a new one."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.reader = hiredis.Reader()
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()  # call, deadline
        self.timer: asyncio.TimerHandle | None = None
        self.unsent: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.closed = False

    @classmethod
    async def open(cls, url: str, timeout_s: float) -> _Pipelined:
        from redis.asyncio.connection import parse_url

        options = parse_url(url)
        loop = asyncio.get_running_loop()
        conn = cls(loop)
        if "path" in options:
            connect = loop.create_unix_connection(lambda: conn, options["path"])
        else:
            tls = options.get("connection_class") is not None  # rediss://
            connect = loop.create_connection(lambda: conn, options.get("host", "127.0.0.1"),
                                             options.get("port", 6379), ssl=tls or None)
        await asyncio.wait_for(connect, timeout_s)
        setup = []
        if options.get("password"):
            setup.append((b"AUTH", *([options["username"]] if options.get("username") else []),
                          options["password"]))
        if options.get("db"):
            setup.append((b"SELECT", options["db"]))
        for command in setup:
            reply = await conn.call(timeout_s, *command)
            if isinstance(reply, hiredis.ReplyError):
                conn.close()
                raise RedisReplyError(f"{command[0].decode()}: {reply}")
        return conn

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader, waiting = self.reader, self.waiting
        reader.feed(data)
        while True:
            reply = reader.gets()
            if reply is False:
                return
            if not waiting:  # more replies than calls: not a Redis we understand
                self.close()
                return
            future, _deadline = waiting.popleft()
            if not future.done():
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        error = ConnectionError(f"the connection to Redis was lost: {exc or 'closed'}")
        while self.waiting:
            future, _deadline = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def close(self) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport is not None:
            self.transport.close()

    def _flush(self) -> None:
        data = b"".join(self.unsent)
        self.unsent.clear()
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def _check_deadlines(self) -> None:
        """Replies come in order: while the oldest waiting call is past its deadline, Redis
        is stalled, and that call fails (its late reply will be matched and dropped). One
        timer per connection, re-armed for the oldest call still in time, instead of one
        timer per call."""
        self.timer = None
        now = self.loop.time()
        for future, deadline in self.waiting:
            if deadline > now:
                self.timer = self.loop.call_at(deadline, self._check_deadlines)
                return
            if not future.done():
                future.set_exception(TimeoutError("Redis did not answer in time"))

    async def call(self, timeout_s: float, *args: Any) -> Any:
        return await self.call_packed(timeout_s, _pack(args))

    async def call_packed(self, timeout_s: float, packed: bytes) -> Any:
        if self.closed:
            raise ConnectionError("the connection to Redis is closed")
        loop = self.loop
        if len(self.waiting) >= MAX_IN_FLIGHT:  # a Redis that stopped answering for good
            self.close()
            raise ConnectionError(f"{MAX_IN_FLIGHT} calls to Redis are waiting for a reply")
        future = loop.create_future()
        deadline = loop.time() + timeout_s
        self.waiting.append((future, deadline))
        if self.timer is None:
            self.timer = loop.call_at(deadline, self._check_deadlines)
        if not self.unsent:
            loop.call_soon(self._flush)
        self.unsent.append(packed)
        return await future


class RedisStore:
    """`shared` and `limit` on Redis, shared by every worker of every node."""

    def __init__(self, url: str, *, timeout_s: float = 0.05, quota: Quota | None = None,
                 prefix: str = "chistone", on_unavailable: OnUnavailable | None = None,
                 backoff_s: float = BACKOFF_S, log_interval_s: float = LOG_INTERVAL_S) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.quota = quota or Quota()
        self.prefix = prefix
        self.on_unavailable = on_unavailable
        self.backoff_s = backoff_s
        self.log_interval_s = log_interval_s
        self._conn: _Pipelined | None = None
        self._limit_parts: dict[tuple[str, int, int], tuple[bytes, bytes, bytes]] = {}
        self._connecting: asyncio.Future[_Pipelined] | None = None
        self._down_until = 0.0  # monotonic time before which Redis is not asked
        self._failing = False
        self._failures = 0  # answers without Redis since the last warning
        self._logged = -math.inf

    def _keys(self, tenant: str) -> str:
        return f"{self.prefix}:{{{tenant}}}:"

    async def _connection(self) -> _Pipelined:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is None:
            # Made on first use, inside the worker's event loop, never at snapshot time.
            self._connecting = asyncio.ensure_future(_Pipelined.open(self.url, self.timeout_s))
        connecting = self._connecting
        try:
            conn = await asyncio.shield(connecting)
        finally:
            if self._connecting is connecting and connecting.done():
                self._connecting = None
        self._conn = conn
        return conn

    async def _limit_call(self, tenant: str, check: LimitCheck) -> Any:
        """limit.allow's EVALSHA, packed from cached parts: per rate-limited request only
        the key is encoded (the rest is the same for a tenant's rate and window)."""
        parts = self._limit_parts.get((tenant, check.rate, check.window_s))
        if parts is None:
            if len(self._limit_parts) >= 4096:
                self._limit_parts.clear()
            base = self._keys(tenant)
            whole = _pack((b"EVALSHA", _LIMIT.sha, 2, base + "l:" + "\0", base + "seq",
                           check.rate, check.window_s))
            marker = b"$%d\r\n%sl:\0\r\n" % (len(base) + 3, base.encode("latin-1"))
            head, _, tail = whole.partition(marker)
            parts = self._limit_parts[(tenant, check.rate, check.window_s)] = (
                head, base.encode("latin-1") + b"l:", tail)
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        head, prefix, tail = parts
        key = prefix + check.key.encode("latin-1")
        reply = await conn.call_packed(self.timeout_s,
                                       b"%s$%d\r\n%s\r\n%s" % (head, len(key), key, tail))
        if isinstance(reply, hiredis.ReplyError):  # NOSCRIPT (Redis restarted) and the rest
            reply = await self._run(_LIMIT, [prefix + check.key.encode("latin-1"),
                                             self._keys(tenant) + "seq"],
                                    [check.rate, check.window_s])
        return reply

    async def _run(self, script: _Script, keys: list[Any], args: list[Any]) -> Any:
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        reply = await conn.call(self.timeout_s, b"EVALSHA", script.sha, len(keys), *keys, *args)
        if isinstance(reply, hiredis.ReplyError):
            if not str(reply).startswith("NOSCRIPT"):
                raise RedisReplyError(str(reply))
            # Redis restarted (or its scripts were flushed): load, then once more.
            await conn.call(self.timeout_s, b"SCRIPT", b"LOAD", script.text)
            reply = await conn.call(self.timeout_s, b"EVALSHA", script.sha, len(keys), *keys,
                                    *args)
            if isinstance(reply, hiredis.ReplyError):
                raise RedisReplyError(str(reply))
        return reply

    async def shared(self, tenant: str, op: SharedOp) -> SharedAnswer:
        if time.monotonic() < self._down_until:
            return self._unavailable(tenant, op.action, None)
        base = self._keys(tenant)
        value = "" if op.value is None else encode(op.value)
        ttl_ms = "" if op.ttl_s is None else str(max(1, round(op.ttl_s * 1000)))
        args = [op.action, _wire(op.key), _wire(value), ttl_ms, str(op.delta or 0),
                str(self.quota.max_keys), str(self.quota.max_bytes)]
        try:
            reply = await self._run(_SHARED, [base + "v", base + "x", base + "b"], args)
        except Exception as exc:  # any failure of the store is "unavailable"
            return self._unavailable(tenant, op.action, exc)
        self._recovered()
        status = int(reply[0])
        if status == -1:
            return SharedAnswer(error="quota")
        if status == -2:
            return SharedAnswer(error="not_a_number")
        if len(reply) < 2:
            return SharedAnswer(None)
        value = decode(reply[1].decode("latin-1"))
        return SharedAnswer(True if op.action in ("set", "delete") else value)

    async def limit(self, tenant: str, check: LimitCheck) -> LimitAnswer:
        if time.monotonic() < self._down_until:
            return self._limit_unavailable(tenant, check, None)
        try:
            reply = await self._limit_call(tenant, check)
        except Exception as exc:  # (the same)
            return self._limit_unavailable(tenant, check, exc)
        self._recovered()
        allowed, count, reset = reply
        return _new_limit_answer(allowed == 1, check.rate, max(0, check.rate - count),
                                 _reset_s(reset))

    def _limit_unavailable(self, tenant: str, check: LimitCheck,
                           exc: BaseException | None) -> LimitAnswer:
        self._unavailable(tenant, "limit", exc)
        if check.fail_closed:
            return LimitAnswer(False, check.rate, 0, max(self.backoff_s, 1.0), degraded=True,
                               error="unavailable")
        return LimitAnswer(True, check.rate, check.rate, 0.0, degraded=True)

    def _unavailable(self, tenant: str, op: str, exc: BaseException | None) -> SharedAnswer:
        now = time.monotonic()
        if exc is not None:
            self._down_until = now + self.backoff_s
            self._failing = True
            self._why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self._failures += 1
        if self.on_unavailable is not None:
            self.on_unavailable(tenant, op)
        if now - self._logged >= self.log_interval_s:
            log.warning("shared state: Redis at %s is unavailable (%s); %d operation(s) "
                        "answered without it since the last report, Redis is tried again "
                        "every %g s", _safe_url(self.url), getattr(self, "_why", "?"),
                        self._failures, self.backoff_s)
            self._logged, self._failures = now, 0
        return SharedAnswer(error="unavailable")

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            log.warning("shared state: Redis at %s answers again", _safe_url(self.url))
            self._logged = -math.inf

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


def _wire(text: str) -> bytes:
    """Lua strings cross as latin-1 text (one char per byte): their bytes, for Redis."""
    return text.encode("latin-1")


def _safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return scheme + sep + rest


def store_from_conf(conf: Any, on_unavailable: OnUnavailable | None = None) -> Store:
    """The worker's store: Redis when CHISTONE_REDIS_URL is set, else this process's memory."""
    quota = Quota(conf.shared_max_keys, conf.shared_max_bytes)
    if conf.redis_url:
        return RedisStore(conf.redis_url, timeout_s=conf.redis_timeout_ms / 1000, quota=quota,
                          prefix=conf.redis_prefix, on_unavailable=on_unavailable)
    return LocalStore(quota)
