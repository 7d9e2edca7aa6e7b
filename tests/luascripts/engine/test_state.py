"""shared.*, limit.allow and middleware.rate_limit in the engine (state.lua).

Driven by hand as in test_waiting: each call is an effect (SharedOp, LimitCheck) the host
answers; bad arguments are script errors at the script's line. The stores are tested in
tests/routing/test_shared_state.py, the whole path in tests/e2e/test_rate_limit.py.
"""

from __future__ import annotations

import pytest

from luascripts.engine import Limits, ProxyAction, RejectAction, RespondAction
from luascripts.engine.effects import LimitAnswer, LimitCheck, SharedAnswer, SharedOp
from luascripts.engine.errors import ScriptLoadError, ScriptRuntimeError
from luascripts.engine.script import ScriptRun

from .support import load, request


def started(script, path="/", **kw) -> ScriptRun:
    run = script.start(request(path, **kw))
    assert isinstance(run, ScriptRun), run
    return run


def body(outcome) -> str:
    assert isinstance(outcome.action, RespondAction), outcome
    return outcome.action.body.decode()


def test_shared_calls_are_effects_and_answers_come_back() -> None:
    script = load("""
    chi.get("/", function(req)
      local v, err = shared.get("user:" .. req.client_ip)
      local ok = shared.set("last", 3.5, 60)
      local n, nerr = shared.incr("hits", 2)
      local gone = shared.delete("old")
      return respond(200, table.concat({tostring(v), tostring(err), tostring(ok),
        tostring(n), tostring(nerr), tostring(gone)}, " "))
    end)
    """)
    run = started(script)
    assert run.effect == SharedOp("get", "user:203.0.113.9")
    run = run.resume(SharedAnswer("stored\x00bytes"))
    assert run.effect == SharedOp("set", "last", 3.5, 60)
    run = run.resume(SharedAnswer(True))
    assert run.effect == SharedOp("incr", "hits", None, None, 2)
    run = run.resume(SharedAnswer(error="quota"))
    assert run.effect == SharedOp("delete", "old")
    done = run.resume(SharedAnswer(True))
    assert body(done) == "stored\x00bytes nil true nil quota true"


def test_unavailable_comes_back_as_nil_and_reason() -> None:
    script = load('chi.get("/", function(req) local v, e = shared.get("k") '
                  'return respond(200, tostring(v) .. "/" .. e) end)')
    assert body(started(script).resume(SharedAnswer(error="unavailable"))) == "nil/unavailable"


def test_limit_allow_returns_the_verdict_and_info() -> None:
    script = load("""
    chi.get("/", function(req)
      local ok, info = limit.allow("api:" .. req.client_ip, 100, 60, {fail = "closed"})
      return respond(200, string.format("%s %d %d %.1f %s", tostring(ok), info.limit,
        info.remaining, info.reset_s, tostring(info.degraded)))
    end)
    """)
    run = started(script)
    assert run.effect == LimitCheck("api:203.0.113.9", 100, 60, fail_closed=True)
    assert body(run.resume(LimitAnswer(True, 100, 99, 0.0))) == "true 100 99 0.0 false"
    run = started(script)
    assert body(run.resume(LimitAnswer(False, 100, 0, 2.5, degraded=True,
                                       error="unavailable"))) == "false 100 0 2.5 true"


@pytest.mark.parametrize(("call", "message"), [
    ('shared.get({})', "shared.get(): the key must be a string, got table"),
    ('shared.get("")', "the key must be 1 to 512 bytes, got 0"),
    ('shared.get(string.rep("k", 513))', "the key must be 1 to 512 bytes, got 513"),
    ('shared.set("k", {})', "the value must be a string or a number, got table"),
    ('shared.set("k", nil)', "the value must be a string or a number, got nil"),
    ('shared.set("k", 0/0)', "a number value must be finite"),
    ('shared.set("k", string.rep("v", 65537))', "the value is 65537 bytes; the limit is 65536"),
    ('shared.set("k", "v", 0)', "ttl_s must be a number of seconds above 0"),
    ('shared.set("k", "v", -1)', "ttl_s must be a number of seconds above 0"),
    ('shared.set("k", "v", "60")', "ttl_s must be a number of seconds above 0"),
    ('shared.incr("k", 1.5)', "delta must be an integer"),
    ('shared.incr("k", 2^60)', "delta must be an integer"),
    ('limit.allow("k", 0, 60)', "rate must be an integer from 1 to 100000, got 0"),
    ('limit.allow("k", 10, 1.5)', "window_s must be an integer from 1 to 86400, got 1.5"),
    ('limit.allow("k", 10, 86401)', "window_s must be an integer from 1 to 86400"),
    ('limit.allow("k", 10, 60, {fail = "shut"})', 'fail must be "open" (the default) or'),
    ('limit.allow("k", 10, 60, {mode = 1})', "unknown option 'mode' (known: fail)"),
])
def test_bad_arguments_are_errors_at_the_scripts_line(call: str, message: str) -> None:
    script = load(f'chi.get("/", function(req)\n  {call}\n  return respond(200, "no") end)')
    with pytest.raises(ScriptRuntimeError, match="^script:2: ") as caught:
        script.start(request("/"))
    assert message in str(caught.value)


def test_calls_per_request_are_bounded() -> None:
    script = load('chi.get("/", function(req) for i = 1, 3 do shared.get("k") end '
                  'return respond(200, "") end)', limits=Limits(max_state_calls=2))
    run = started(script).resume(SharedAnswer(None))
    with pytest.raises(ScriptRuntimeError, match=r"more than 2 shared-state calls in one "
                                                 r"request \(max_state_calls\)"):
        run.resume(SharedAnswer(None))


def test_shared_is_read_only_and_not_usable_at_load() -> None:
    with pytest.raises(ScriptLoadError, match="can only be called while handling a request"):
        load('shared.get("k")\nchi.get("/", function(req) return respond(200, "") end)')
    script = load('chi.get("/", function(req) shared.get = nil end)')
    with pytest.raises(ScriptRuntimeError):
        script.start(request("/"))


# -- middleware.rate_limit ------------------------------------------------------------------

RATE_LIMITED = """
chi.use(middleware.rate_limit{rate = 2, per = 10})
chi.get("/p", function(req) return proxy("users") end)
chi.get("/r", function(req) return respond(200, "hi") end)
chi.with(middleware.rate_limit{rate = 5, per = 60, key = "header:X-Api-Key"})
  .get("/keyed", function(req) return respond(200, "k") end)
chi.group(function(r)
  r.use(middleware.rate_limit{rate = 1, per = 1, fail = "closed",
    key = function(req) return req.query.user or "anon" end, name = "per-user"})
  r.get("/user", function(req) return respond(200, "u") end)
end)
"""


def test_rate_limit_passes_and_labels_every_answer() -> None:
    script = load(RATE_LIMITED)
    run = started(script, "/p")
    assert run.effect == LimitCheck("rl::2/10:ip:203.0.113.9", 2, 10)
    done = run.resume(LimitAnswer(True, 2, 1, 0.0))
    # the proxied answer gets the headers as a patch: the body still streams
    assert isinstance(done.action, ProxyAction)
    assert done.patch.headers == (("ratelimit-limit", "2"), ("ratelimit-remaining", "1"),
                                  ("ratelimit-reset", "0"))
    assert done.patch.body is None
    assert done.middleware == ("middleware.rate_limit (line 2)",)
    done = started(script, "/r").resume(LimitAnswer(True, 2, 0, 7.2))
    assert body(done) == "hi"
    assert ("ratelimit-reset", "8") in done.patch.headers


def test_over_the_limit_is_a_429_with_retry_after() -> None:
    script = load(RATE_LIMITED)
    done = started(script, "/p").resume(LimitAnswer(False, 2, 0, 3.1))
    assert done.action == RejectAction(429, "Too many requests: the limit is 2 per 10 s.")
    assert dict(done.patch.headers) == {"ratelimit-limit": "2", "ratelimit-remaining": "0",
                                        "ratelimit-reset": "4", "retry-after": "4"}


def test_fail_closed_refuses_with_a_503_when_the_limit_cannot_be_checked() -> None:
    script = load(RATE_LIMITED)
    run = started(script, "/user").resume(LimitAnswer(True, 2, 1, 0.0))
    done = run.resume(LimitAnswer(False, 1, 0, 1.0, degraded=True, error="unavailable"))
    assert done.action == RejectAction(
        503, "The rate limit cannot be checked now; try again shortly.")
    assert dict(done.patch.headers)["retry-after"] == "1"


def test_rate_limit_keys() -> None:
    script = load(RATE_LIMITED)
    run = started(script, "/keyed", headers={"x-api-key": "k1"})
    assert run.effect.key == "rl::2/10:ip:203.0.113.9"  # chi.use's limit first
    run = run.resume(LimitAnswer(True, 2, 1, 0.0))
    assert run.effect == LimitCheck("rl::5/60:h:x-api-key:v:k1", 5, 60)
    # without the header: the client's address, never a bucket shared by all such clients
    run = started(script, "/keyed").resume(LimitAnswer(True, 2, 1, 0.0))
    assert run.effect.key == "rl::5/60:h:x-api-key:ip:203.0.113.9"
    run = started(script, "/user", query="user=bob").resume(LimitAnswer(True, 2, 1, 0.0))
    assert run.effect == LimitCheck("rl:per-user:1/1:fn:bob", 1, 1, fail_closed=True)


@pytest.mark.parametrize(("args", "message"), [
    ("()", "middleware.rate_limit takes a table"),
    ("{}", "rate must be an integer from 1 to 100000, got nil"),
    ("{rate = 10, per = 0}", "per must be an integer from 1 to 86400"),
    ("{rate = 10, key = 'cookie'}", 'key must be "ip", "header:NAME" or a function(req)'),
    ("{rate = 10, key = 'header:bad name'}", "is not a valid HTTP token"),
    ("{rate = 10, fail = 'maybe'}", 'fail must be "open" (the default) or "closed"'),
    ("{rate = 10, burst = 3}", "unknown option 'burst' (known: rate, per, key, fail, name)"),
])
def test_rate_limit_options_are_checked_at_load(args: str, message: str) -> None:
    with pytest.raises(ScriptLoadError) as caught:
        load(f"chi.use(middleware.rate_limit{args})\n"
             'chi.get("/", function(req) return respond(200, "") end)')
    assert message in str(caught.value)
    assert caught.value.diagnostics[0].line == 1
