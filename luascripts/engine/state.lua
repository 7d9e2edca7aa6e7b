-- state.lua: shared.* and limit.allow (state shared by every worker of every node), and
-- middleware.rate_limit built on them. (Filled in by the shared-state work.)

local K = ...
