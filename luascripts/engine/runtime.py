"""One sandboxed Lua 5.4 state: bootstrap, memory budget, and protected calls into it.

The sandbox itself is built in Lua, by the trusted modules in MODULES (loaded in that order,
each given the shared table of internals `K`); this module only drives it. Rules it keeps,
from docs/lua-sandbox.md:

* Lua 5.4 only; a deny-all attribute filter, no `python` global, no `debug`, no eval/builtins.
* Every call that can run tenant code goes through the C function `xpcall` (with
  `K.on_error` as message handler), so no Lua instruction runs outside a protected call:
  once the sticky timeout hook has fired it raises on every instruction.
* The memory cap is `baseline + limits.memory_bytes`, where the baseline is the sandbox's own
  use. Values pushed from Python are allocated *outside* protection, where going over the
  cap aborts the process, so before each call `ensure_headroom` makes sure the pushed bytes
  fit (collecting garbage if needed) and callers cap input sizes first.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import lupa.lua54 as lupa

from luascripts.engine.boundary import lua_layout
from luascripts.engine.types import Limits

MODULES = ("sandbox", "caps", "helpers", "router", "actions", "request", "response", "calls",
           "state", "identity", "middleware", "dispatch")
_SOURCES = {name: (Path(__file__).with_name(f"{name}.lua")).read_text("ascii")
            for name in MODULES}
# Dropped from the real globals once the trusted modules hold what they need, so nothing
# dangerous stays reachable even from code that somehow got the real _G.
_CLEANUP = """
python, io, os, package, debug, require, dofile, loadfile, load, collectgarbage, print =
  nil, nil, nil, nil, nil, nil, nil, nil, nil, nil, nil
"""
_LOADER = "function(src, name, K) return assert(load(src, '=' .. name, 't'))(K) end"
PATTERN_STEPS_PER_MS = 200_000  # Lua's matcher does about 250k backtracking steps per ms
HEADROOM_SLACK = 64 * 1024


def _deny_attributes(obj: object, name: object, is_setting: bool) -> str:
    raise AttributeError("Python objects are not accessible from scripts")


def _sha256_hex(data: object) -> str | None:
    # Called only by a Lua closure that has checked `data` is a bounded string.
    if type(data) is not str:
        return None
    return hashlib.sha256(data.encode("latin-1")).hexdigest()


def _hmac_sha256_hex(key: object, msg: object) -> str | None:
    if type(key) is not str or type(msg) is not str:
        return None
    return hmac.new(key.encode("latin-1"), msg.encode("latin-1"), hashlib.sha256).hexdigest()


def _key_ok(text: object) -> bool:
    # Called by identity.lua while a script registers middleware.jwt{keys = ...}: a key that
    # can never verify anything fails validation at its line. joserfc is loaded on first use.
    from luascripts.engine.keys import key_ok

    return key_ok(text)


_STRICT = """
function(t, what)
  return setmetatable(t, { __index = function(_, k)
    error(what .. " has no field '" .. tostring(k) .. "'", 2)
  end })
end
"""


def _lua_table(lua: Any, value: dict[str, Any], what: str = "") -> Any:
    """A nested dict as Lua tables (trusted set-up data only). With `what`, reading a field
    that is not there is an error naming it: a misspelt limit or record field in the Lua
    modules fails loudly instead of reading nil."""
    table = lua.table()
    for key, item in value.items():
        table[key] = (_lua_table(lua, item, f"{what}.{key}" if what else "")
                      if isinstance(item, dict) else item)
    if what:
        lua.eval(_STRICT)(table, what)
    return table


class Runtime:
    """A bootstrapped Lua state for one script. Not thread-safe: the caller serialises."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        # latin-1 maps every byte to one code point, so Lua strings and Python str convert
        # losslessly both ways; the data plane uses latin-1 for header values as well.
        lua = lupa.LuaRuntime(
            encoding="latin-1", source_encoding="latin-1", register_eval=False,
            register_builtins=False, attribute_filter=_deny_attributes,
            unpack_returned_tuples=False, max_memory=0,
        )
        k = lua.table()
        # The one place the Lua side learns its limits (by Limits field name) and the layout
        # of every record that crosses the boundary (luascripts/engine/boundary.py).
        lua_limits = limits.to_lua()
        lua_limits["pattern_work"] = max(1e6, limits.request_cpu_ms * PATTERN_STEPS_PER_MS)
        k["limits"] = _lua_table(lua, lua_limits, "limits")
        k["layout"] = _lua_table(lua, lua_layout(), "layout")
        k["clock"] = time.perf_counter
        k["py_now"] = time.time
        k["py_sha256"] = _sha256_hex
        k["py_hmac"] = _hmac_sha256_hex
        k["py_key_ok"] = _key_ok
        loader = lua.eval(_LOADER)
        for name in MODULES:
            loader(_SOURCES[name], name, k)
        lua.execute(_CLEANUP)
        k.sethook(k.hook, "", k.HOOK_COUNT)
        # Almost everything a request allocates (its context, request and response tables,
        # closures, strings) dies with the request, while the script's registered tables live
        # as long as the state: what Lua 5.4's generational collector is made for. Measured
        # in bench/RESULTS.md: about 1.5 us less per request that waits once.
        k.collect("generational")
        self.lua = lua
        self.k = k
        # The per-request entry points, called as xpcall(fn, on_error, deadline, ...).
        self.xpcall = k.xpcall
        self.on_error = k.on_error
        self.run_fn = k.run
        self.resume_fn = k.resume
        self.cancel_fn = k.cancel
        self.pending = 0  # requests suspended in this state, waiting for the host
        self.baseline = lua.get_memory_used()
        self.limit = self.baseline + limits.memory_bytes
        lua.set_max_memory(self.limit)

    # -- protected calls ------------------------------------------------------------------

    def call(self, fn: Any, *args: Any) -> tuple[Any, ...]:
        """xpcall(fn, K.on_error, *args): (True, results...) or (False, error)."""
        result = self.xpcall(fn, self.on_error, *args)
        return result if isinstance(result, tuple) else (result,)

    def recover(self) -> tuple[bool, int | None]:
        """After a failed call: re-arm the hook (a C call, so the sticky hook cannot fire
        first), then clear the timeout state. Returns (timed_out, script line)."""
        k = self.k
        k.sethook(k.hook, "", k.HOOK_COUNT)
        was, line = k.reset()
        return bool(was), int(line) if isinstance(line, int | float) else None

    # -- memory ---------------------------------------------------------------------------

    def memory_used(self) -> int:
        return int(self.lua.get_memory_used())

    def ensure_headroom(self, need: int) -> bool:
        """True when `need` bytes can be pushed from Python without reaching the cap."""
        lua = self.lua
        need += HEADROOM_SLACK
        if self.limit - lua.get_memory_used() >= need:
            return True
        self.collect()
        return self.limit - lua.get_memory_used() >= need

    def collect(self) -> None:
        """A full garbage collection (with the cap lifted: the call itself pushes a value)."""
        lua = self.lua
        lua.set_max_memory(0)
        try:
            self.k.collect("collect")
        finally:
            lua.set_max_memory(self.limit)

    # -- registration ---------------------------------------------------------------------

    def register(self, source: bytes, backend_names: list[str] | None,
                 deadline: float) -> tuple[Any, ...]:
        lua, k = self.lua, self.k
        lua.set_max_memory(0)
        try:
            # Pushed with the cap lifted; inputs are bounded by Limits.max_source_bytes.
            k.stash(source)
            if backend_names is None:
                k.set_backends(False)
            else:
                k.set_backends(*backend_names)
        finally:
            lua.set_max_memory(self.limit)
        return self.call(k.register, deadline)

    def export(self) -> tuple[Any, ...]:
        return self.call(self.k.export, self.k.globals or self.k.env)

    def define_chains(self, flat: list[int]) -> None:
        lua = self.lua
        lua.set_max_memory(0)
        try:
            ok, *rest = self.call(self.k.define_chains, *flat)
        finally:
            lua.set_max_memory(self.limit)
        if not ok:
            raise RuntimeError(f"could not define middleware chains: {rest[0]!r}")

    def close(self) -> None:
        """Drop every reference into the Lua state so it is freed now, not at some GC."""
        self.lua = self.k = None  # type: ignore[assignment]
        self.xpcall = self.on_error = self.run_fn = self.resume_fn = self.cancel_fn = None
