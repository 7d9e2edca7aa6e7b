-- Routing on a field of the JSON body.
-- Backends expected: users, billing.
--
-- POST /rpc with a JSON-RPC 2.0 call goes to the backend that owns the method's namespace
-- ("users.get" -> users, "billing.charge" -> billing), with the method in x-rpc-method.
-- Errors are JSON-RPC error objects (HTTP 200, as JSON-RPC over HTTP expects): -32700 for a
-- body that is not JSON, -32600 for a call without a method, -32601 for an unknown one.
-- POST /graphql goes by its operationName: mutations named "Charge..." to billing, the rest
-- to users.

local OWNERS = { users = "users", billing = "billing" }

local function rpc_error(id, code, message)
  return respond(200, json.encode({ jsonrpc = "2.0", id = id or json.null,
    error = { code = code, message = message } }), { ["content-type"] = "application/json" })
end

chi.post("/rpc", function(req)
  local ok, call = pcall(json.decode, req.body())
  if not ok or type(call) ~= "table" then return rpc_error(nil, -32700, "Parse error") end
  if type(call.method) ~= "string" then return rpc_error(call.id, -32600, "Invalid Request") end
  local owner = OWNERS[call.method:match("^([%w_]+)%.")]
  if owner == nil then return rpc_error(call.id, -32601, "Method not found") end
  return proxy(owner, { set_headers = { ["x-rpc-method"] = call.method } })
end)

chi.post("/graphql", function(req)
  local ok, query = pcall(json.decode, req.body())
  local operation = ok and type(query) == "table" and query.operationName or ""
  if type(operation) ~= "string" then operation = "" end
  local backend = operation:match("^Charge") and "billing" or "users"
  return proxy(backend, { set_headers = { ["x-graphql-operation"] = operation } })
end)
