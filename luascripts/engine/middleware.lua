-- middleware.lua: the standard middleware table (`middleware.rate_limit`, `middleware.jwt`,
-- `middleware.cors`), usable with chi.use, r.use and r.with. The modules loaded before this
-- one add their constructors to K.middleware; this one publishes the table read-only.

local K = ...

K.helpers.middleware = K.readonly(K.middleware, "middleware")
