"""json, base64, crypto, time and log helpers, checked against Python's own libraries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

from luascripts.engine import ScriptRuntimeError

from .support import load, request


def evaluate(expression: str, *, setup: str = "") -> str:
    """Run `expression` in a handler and return the string it evaluates to."""
    source = f"{setup}\nchi.get('/', function(req) return respond(200, {expression}) end)"
    script = load(source)
    try:
        return script.handle(request("/")).action.body.decode("utf-8", "surrogateescape")
    finally:
        script.close()


def test_json_encode_matches_python() -> None:
    out = evaluate('json.encode({b = {1, 2.5, "x"}, a = true, c = json.null, '
                   'd = "q\\"\\n\\1", e = {}})')
    assert json.loads(out) == {"a": True, "b": [1, 2.5, "x"], "c": None, "d": 'q"\n\x01',
                               "e": {}}
    assert out.startswith('{"a":true,"b":')  # keys sorted: deterministic output to sign


def test_json_decode_round_trip() -> None:
    doc = {"name": "café ☕", "n": [1, -2.5e3, 0], "ok": False, "none": None,
           "nested": {"deep": [[{}]]}, "esc": "\u00e9\U0001F600\t"}
    text = json.dumps(doc)
    out = evaluate(f"json.encode(json.decode({json.dumps(text)}))")
    assert json.loads(out) == doc


@pytest.mark.parametrize("bad", ['"{"', '"[1,]"', '"{\\"a\\" 1}"', '"tru"', '"1 2"'])
def test_json_decode_errors(bad: str) -> None:
    with pytest.raises(ScriptRuntimeError, match="json.decode"):
        evaluate(f"json.encode(json.decode({bad}))")


def test_json_refuses_cycles_and_functions() -> None:
    with pytest.raises(ScriptRuntimeError, match="nested more than 64"):
        evaluate("json.encode(t)", setup="t = {} t.self = t")
    with pytest.raises(ScriptRuntimeError, match="cannot encode a function"):
        evaluate("json.encode({f = print or error})")


@pytest.mark.parametrize("data", [b"", b"f", b"fo", b"foo", b"foobar", bytes(range(256))])
def test_base64_matches_python(data: bytes) -> None:
    literal = "".join(f"\\{b}" for b in data)
    encoded = evaluate(f'base64.encode("{literal}")')
    assert encoded == base64.b64encode(data).decode()
    round_trip = evaluate(f'base64.decode(base64.encode("{literal}"))')
    assert round_trip.encode("utf-8", "surrogateescape") == data


def test_base64_decode_accepts_url_safe_and_reports_garbage() -> None:
    assert evaluate('base64.decode("-_8")') == evaluate('base64.decode("+/8=")')
    assert evaluate('tostring(base64.decode("a$b="))') == "nil"


def test_sha256_and_hmac_match_hashlib() -> None:
    assert evaluate('crypto.sha256("abc")') == hashlib.sha256(b"abc").hexdigest()
    assert evaluate('crypto.sha256("")') == hashlib.sha256(b"").hexdigest()
    assert evaluate('crypto.sha256("\\255\\0x")') == hashlib.sha256(b"\xff\x00x").hexdigest()
    expected = hmac.new(b"k\xe9y", b"msg", hashlib.sha256).hexdigest()
    assert evaluate('crypto.hmac_sha256("k\\233y", "msg")') == expected
    assert evaluate("crypto.sha256(12)") == hashlib.sha256(b"12").hexdigest()


def test_crypto_rejects_non_strings() -> None:
    with pytest.raises(ScriptRuntimeError, match="must be a string, got table"):
        evaluate("crypto.sha256({})")
    with pytest.raises(ScriptRuntimeError, match="argument #2 must be a string"):
        evaluate("crypto.hmac_sha256('k', nil)")


def test_time_now_is_wall_clock_seconds() -> None:
    before = time.time()
    now = float(evaluate("string.format('%.6f', time.now())"))
    assert before - 1 <= now <= time.time() + 1
    assert evaluate("math.type(time.now())") == "float"


def test_helpers_expose_no_python_objects() -> None:
    """Walk everything a script can reach from its globals (tables, metatables, the values
    helpers return): no userdata anywhere, so no Python object to poke at."""
    source = """
    local seen, found = {}, {}
    local function walk(v, path)
      local t = type(v)
      if t == "userdata" then found[#found + 1] = path return end
      if t ~= "table" or seen[v] then return end
      seen[v] = true
      for k, x in pairs(v) do walk(k, path .. ".<key>") walk(x, path .. "." .. tostring(k)) end
      local mt = getmetatable(v)
      if mt ~= nil then walk(mt, path .. ".<mt>") end
    end
    walk(_G, "_G")
    walk(getmetatable(""), "string-mt")
    walk(time.now(), "time.now()")
    walk(crypto.sha256("x"), "sha256()")
    walk({pcall(crypto.sha256, {})}, "pcall(sha256)")
    walk({pcall(crypto.hmac_sha256)}, "pcall(hmac)")
    for name, fn in pairs({time.now, crypto.sha256, log.info, json.encode}) do
      walk(type(fn), "type")
    end
    chi.get("/", function(req) return respond(200, #found .. ":" .. table.concat(found, ",")) end)
    """
    script = load(source)
    assert script.handle(request("/")).action.body == b"0:"
    assert evaluate("type(time.now) .. type(crypto.sha256) .. type(crypto.hmac_sha256)") == \
        "functionfunctionfunction"
