-- caps.lua: caps for library functions whose cost the count hook cannot interrupt.
--
-- A C function such as string.find runs to completion between two VM instructions, so a
-- backtracking pattern (".-.-.-.-b$" on 30 kB) or a giant string.rep would never meet the
-- deadline. These wrappers replace the functions in the real library tables (so method
-- calls like s:rep() are capped too) and
--   * refuse a call before it starts when its worst-case cost is over budget: results of
--     rep, gsub and format may not exceed max_string bytes; for patterns, a static estimate
--     of the backtracking work -- every repetition that can trade characters with what
--     follows it multiplies the work by the subject length n, so the worst case is about
--     n^k / k! steps for k such factors, plus one for scanning start positions when the
--     pattern is not anchored -- may not exceed pattern_work steps;
--   * check the deadline before any call on a large input (K.check_deadline), so a loop of
--     expensive calls stops at the deadline instead of after the next 1000 instructions.
-- The original string functions stay available to trusted code as K.S.

local K = ...

local type, tostring, tonumber, error, select, pcall = type, tostring, tonumber, error, select,
  pcall
local S = {}
for k, v in pairs(string) do S[k] = v end
K.S = S

local find, match, gmatch, gsub, rep, format = S.find, S.match, S.gmatch, S.gsub, S.rep, S.format
local sub, byte, char = S.sub, S.byte, S.char

-- luascripts.engine.types.Limits by field name, plus pattern_work (backtracking steps one
-- request's CPU budget allows), computed by the host from request_cpu_ms.
local limits = K.limits
local MAX_PATTERN = 4096
local BIG = 64 * 1024 -- inputs above this many bytes (or work steps) check the deadline first
local check_deadline = K.check_deadline

local getinfo = debug.getinfo

-- Errors located at the script line that called the library function (when that frame
-- still exists: `return s:find(...)` is a tail call and leaves none).
local function located(msg)
  for level = 3, 8 do
    local info = getinfo(level, "Sl")
    if not info then break end
    if info.source == "=script" and info.currentline > 0 then
      error("script:" .. info.currentline .. ": " .. msg, 0)
    end
  end
  error(msg, 0)
end

local function fail(fn, msg)
  located("string." .. fn .. ": " .. msg)
end

local function as_string(v, fn, argn)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return tostring(v) end
  located("bad argument #" .. argn .. " to '" .. fn .. "' (string expected, got " .. t .. ")")
end

-- Bitmask sets of the bytes a single-character pattern item matches ("a", "%d", "[^;]").
local MASKS, mask_count = {}, 0
local FULL = { -1, -1, -1, -1 }

local function item_mask(item)
  if item == "." then return FULL end
  local m = MASKS[item]
  if m then return m end
  m = { 0, 0, 0, 0 }
  local probe = "^" .. item .. "$"
  for c = 0, 255 do
    if find(char(c), probe) then
      local w = (c >> 6) + 1
      m[w] = m[w] | (1 << (c & 63))
    end
  end
  if mask_count > 512 then MASKS, mask_count = {}, 0 end
  MASKS[item], mask_count = m, mask_count + 1
  return m
end

local function disjoint(a, b)
  local ma, mb = item_mask(a), item_mask(b)
  return (ma[1] & mb[1]) | (ma[2] & mb[2]) | (ma[3] & mb[3]) | (ma[4] & mb[4]) == 0
end

-- End index of the set that starts with '[' at i (Lua's classEnd), or nil if malformed.
local function set_end(p, i)
  local n = #p
  i = i + 1
  if sub(p, i, i) == "^" then i = i + 1 end
  repeat
    if i > n then return nil end
    local c = sub(p, i, i)
    i = i + 1
    if c == "%" then
      if i > n then return nil end
      i = i + 1
    end
  until sub(p, i, i) == "]"
  return i
end

-- Items of a pattern: { kind = "one" | "lin" | "dollar", text, q }. nil if malformed.
local function items_of(p, start)
  local items, i, n = {}, start, #p
  while i <= n do
    local c = sub(p, i, i)
    if c == "(" or c == ")" then
      i = i + 1
    elseif c == "$" and i == n then
      items[#items + 1] = { kind = "dollar" }
      i = i + 1
    else
      local j
      if c == "%" then
        local d = sub(p, i + 1, i + 1)
        if d == "" then return nil end
        if d == "b" then
          if i + 3 > n then return nil end
          items[#items + 1] = { kind = "lin" }
          i = i + 4
          goto continue
        elseif d == "f" then
          if sub(p, i + 2, i + 2) ~= "[" then return nil end
          local e = set_end(p, i + 2)
          if not e then return nil end
          i = e + 1
          goto continue
        elseif find(d, "^%d$") then
          items[#items + 1] = { kind = "lin" }
          i = i + 2
          goto continue
        end
        j = i + 1
      elseif c == "[" then
        j = set_end(p, i)
        if not j then return nil end
      else
        j = i
      end
      do
        local q = sub(p, j + 1, j + 1)
        if q == "*" or q == "+" or q == "-" or q == "?" then
          items[#items + 1] = { kind = "one", text = sub(p, i, j), q = q }
          i = j + 2
        else
          items[#items + 1] = { kind = "one", text = sub(p, i, j), q = "" }
          i = j + 1
        end
      end
    end
    ::continue::
  end
  return items
end

-- { k = degree, opt = optional items that can overlap, m = item count } or nil.
local ANALYSIS, analysis_count = {}, 0

local function analyse(p, anchorable)
  local key = anchorable and p or "\0" .. p
  local a = ANALYSIS[key]
  if a then return a end
  local anchored = anchorable and sub(p, 1, 1) == "^"
  local items = items_of(p, anchored and 2 or 1)
  if not items then return nil end
  local mult, lin, opt = 0, 0, 0
  for i = 1, #items do
    local it = items[i]
    if it.kind == "lin" then
      lin = lin + 1
    elseif it.kind == "one" and it.q ~= "" then
      local nx = items[i + 1]
      local mandatory_next = nx and nx.kind == "one" and (nx.q == "" or nx.q == "+")
      if it.q == "?" then
        if not (mandatory_next and disjoint(it.text, nx.text)) then opt = opt + 1 end
      elseif nx == nil then
        -- a trailing repetition never backtracks into anything: no factor
      elseif nx.kind == "dollar" or (mandatory_next and disjoint(it.text, nx.text)) then
        lin = lin + 1
      else
        mult = mult + 1
      end
    end
  end
  a = { k = mult + (lin > 0 and 1 or 0), anchored = anchored, opt = opt, m = #items + 1 }
  if analysis_count > 256 then ANALYSIS, analysis_count = {}, 0 end
  ANALYSIS[key], analysis_count = a, analysis_count + 1
  return a
end

-- Worst-case steps for a subject of n bytes (unanchored: every start position is tried).
local function work(a, n)
  local k = a.k + (a.anchored and 0 or 1)
  local w = 2.0 ^ a.opt
  for i = 1, k do w = w * (n / i) end
  return w + a.m * n
end

local SPECIALS = "[%^%$%*%+%?%.%(%[%%%-]"

local function check_pattern(fn, s, p, n, anchorable, plain)
  if #p > MAX_PATTERN then
    fail(fn, "pattern is longer than " .. MAX_PATTERN .. " bytes")
  end
  if #s > limits.max_string_bytes then
    fail(fn, "subject is " .. #s .. " bytes; the limit is " .. limits.max_string_bytes)
  end
  if plain or not find(p, SPECIALS) then
    if n * #p > limits.pattern_work * 16 then
      fail(fn, "plain search of a " .. #p .. "-byte string in " .. n .. " bytes is too costly")
    end
    if n > BIG then check_deadline() end
    return
  end
  local a = analyse(p, anchorable)
  if not a then
    -- Let Lua report the exact problem with the pattern (on an empty subject: no cost).
    local ok, err = pcall(find, "", p)
    fail(fn, ok and "pattern is too complex to analyse" or tostring(err))
  end
  local w = work(a, n)
  if w > limits.pattern_work then
    fail(fn, "pattern is too costly for a " .. n .. "-byte subject (it may backtrack " ..
      "heavily); anchor it with '^', use plain find, or shorten the subject")
  end
  if w > BIG or n > BIG then check_deadline() end
end

local function span(s, init)
  local n = #s
  if init == nil then return n end
  init = tonumber(init) or 1
  if init < 0 then init = n + init + 1 end
  if init < 1 then init = 1 end
  if init > n + 1 then return 0 end
  return n - init + 1
end

local function capped_find(s, p, init, plain)
  s, p = as_string(s, "find", 1), as_string(p, "find", 2)
  check_pattern("find", s, p, span(s, init), true, plain)
  return find(s, p, init, plain)
end

local function capped_match(s, p, init)
  s, p = as_string(s, "match", 1), as_string(p, "match", 2)
  check_pattern("match", s, p, span(s, init), true, false)
  return match(s, p, init)
end

local function capped_gmatch(s, p, init)
  s, p = as_string(s, "gmatch", 1), as_string(p, "gmatch", 2)
  -- gmatch never anchors ('^' is a literal there): every start position is tried.
  check_pattern("gmatch", s, p, span(s, init), false, false)
  return gmatch(s, p, init)
end

local function capped_gsub(s, p, repl, max_n)
  s, p = as_string(s, "gsub", 1), as_string(p, "gsub", 2)
  check_pattern("gsub", s, p, #s, true, false)
  local rt = type(repl)
  if rt == "string" or rt == "number" then
    repl = tostring(repl)
    local n = #s
    local matches = n + 1
    if type(max_n) == "number" and max_n >= 0 and max_n < matches then matches = max_n end
    local _, refs = gsub(repl, "%%[0-9]", "")
    local estimate = n + matches * #repl + refs * n
    if estimate > limits.max_string_bytes then
      fail("gsub", "result could reach " .. estimate .. " bytes; the limit is " ..
        limits.max_string_bytes)
    end
    if estimate > BIG then check_deadline() end
  end
  return gsub(s, p, repl, max_n)
end

local function capped_rep(s, n, sep)
  s = as_string(s, "rep", 1)
  if type(n) ~= "number" then
    located("bad argument #2 to 'rep' (number expected, got " .. type(n) .. ")")
  end
  if sep ~= nil then sep = as_string(sep, "rep", 3) end
  if n > 0 then
    local total = #s * n + (sep and #sep * (n - 1) or 0)
    if total > limits.max_string_bytes then
      fail("rep", "result would be " .. format("%.0f", total) .. " bytes; the limit is " ..
        limits.max_string_bytes)
    end
    if total > BIG then check_deadline() end
  end
  return rep(s, n, sep)
end

local function capped_format(fmt, ...)
  fmt = as_string(fmt, "format", 1)
  local total = #fmt
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if type(v) == "string" then
      total = total + 2 * #v + 2 -- %q can double a string
    else
      total = total + 128
    end
  end
  if total > limits.max_string_bytes then
    fail("format", "result could reach " .. total .. " bytes; the limit is " ..
      limits.max_string_bytes)
  end
  if total > BIG then check_deadline() end
  return format(fmt, ...)
end

-- Linear-time functions: harmless once, but a tight loop over a multi-megabyte string
-- could run for seconds between two hook checks.
local function linear(f)
  return function(s, ...)
    if type(s) == "string" and #s > BIG then check_deadline() end
    return f(s, ...)
  end
end

local MAX_SORT = 100000
local t_sort, t_concat, rawlen = table.sort, table.concat, rawlen

local function capped_sort(t, cmp)
  if type(t) == "table" then
    local n = rawlen(t)
    if n > MAX_SORT then
      located("table.sort: a script may sort at most " .. MAX_SORT .. " elements")
    end
    if n > 1000 then check_deadline() end
  end
  return t_sort(t, cmp)
end

local function capped_concat(t, sep, i, j)
  if type(t) == "table" and rawlen(t) > 1000 then check_deadline() end
  return t_concat(t, sep, i, j)
end

-- table.move copies its whole range in one C call, whatever the table holds:
-- table.move({}, 1, 2^50, 2) would never return. Large ranges are refused above MAX_MOVE
-- elements (more than any table within the memory limit holds) and otherwise moved in
-- chunks, with a deadline check between two chunks. Chunks keep Lua's copy order: forward
-- unless the destination overlaps the source from above in the same table.
local MAX_MOVE, MOVE_CHUNK = 1 << 24, 4096
local t_move, t_unpack, t_insert, t_remove = table.move, table.unpack, table.insert,
  table.remove
local tointeger, rawequal = math.tointeger, rawequal
K.raw_unpack = t_unpack -- for trusted code (dispatch's encode, on the hot path)

-- An integer argument as Lua's C functions read it (numeric strings included), or nil.
local function int(v)
  local n = tonumber(v)
  return n and tointeger(n)
end

local function capped_move(a1, f, e, t, a2)
  local fi, ei, ti = int(f), int(e), int(t)
  if not (fi and ei and ti) or ei - fi < MOVE_CHUNK or ei < fi then
    return t_move(a1, f, e, t, a2) -- small, empty, or an argument error Lua will report
  end
  local count = ei - fi + 1
  if count <= 0 or count > MAX_MOVE then
    located("table.move: a script may move at most " .. MAX_MOVE .. " elements at once")
  end
  local dest = a2 == nil and a1 or a2
  if ti > ei or ti <= fi or not rawequal(dest, a1) then
    for c = fi, ei, MOVE_CHUNK do
      check_deadline()
      local last = c + MOVE_CHUNK - 1
      if last > ei then last = ei end
      t_move(a1, c, last, ti + (c - fi), dest)
    end
  else
    for last = ei, fi, -MOVE_CHUNK do
      check_deadline()
      local c = last - MOVE_CHUNK + 1
      if c < fi then c = fi end
      t_move(a1, c, last, ti + (c - fi), dest)
    end
  end
  return dest
end

-- table.unpack pushes up to a million values (the stack limit) in one call.
local function capped_unpack(t, i, j)
  if j ~= nil then
    local ii, ji = int(i or 1), int(j)
    if ii and ji and ji - ii > 1000 then check_deadline() end
  elseif type(t) == "table" and rawlen(t) > 1000 then
    check_deadline()
  end
  return t_unpack(t, i, j)
end

-- insert/remove at a position shift every later element: O(n) per call.
local function capped_insert(t, ...)
  if select("#", ...) > 1 and type(t) == "table" and rawlen(t) > 1000 then check_deadline() end
  return t_insert(t, ...)
end

local function capped_remove(t, pos)
  if pos ~= nil and type(t) == "table" and rawlen(t) > 1000 then check_deadline() end
  return t_remove(t, pos)
end

-- Patch the real table (string methods resolve here). Binary packing is left out: no
-- routing script needs it and it is one more parser of untrusted formats.
string.find, string.match, string.gmatch, string.gsub = capped_find, capped_match,
  capped_gmatch, capped_gsub
string.rep, string.format = capped_rep, capped_format
string.pack, string.unpack, string.packsize = nil, nil, nil
for _, name in pairs({ "upper", "lower", "reverse", "sub", "byte" }) do
  string[name] = linear(string[name])
end
utf8.len, utf8.codepoint, utf8.offset = linear(utf8.len), linear(utf8.codepoint),
  linear(utf8.offset)
table.sort, table.concat, table.move = capped_sort, capped_concat, capped_move
table.unpack, table.insert, table.remove = capped_unpack, capped_insert, capped_remove

-- Exposed for tests of the estimator through the host.
K.pattern_work = function(p, n)
  local a = analyse(p, true)
  return a and work(a, n) or nil
end
