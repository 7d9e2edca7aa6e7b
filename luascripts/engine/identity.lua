-- identity.lua: jwt.verify, and middleware.jwt and middleware.cors. (Filled in by the
-- identity work.)

local K = ...
