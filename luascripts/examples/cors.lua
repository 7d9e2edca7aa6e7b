-- CORS with the standard middleware: preflights answered by the gateway, the headers added
-- to every answer (proxied ones included) for the allowed origins.
-- Backends expected: api.
--
-- An OPTIONS request with Access-Control-Request-Method is a preflight: 204, with the
-- Access-Control-Allow-* headers when the origin, the method and the requested headers are
-- allowed, without them otherwise (the browser then refuses the real request). Any other
-- request is proxied; a request from an allowed origin gets Access-Control-Allow-Origin
-- (its own origin, never "*", since credentials are allowed) and Vary: Origin on the answer,
-- whether the backend, the script or the gateway itself (a 502, a 404) gave it. A request
-- from another origin still goes through: only the browser, seeing no CORS headers, keeps
-- the answer from the page.

chi.use(middleware.cors{
  origins = { "https://app.example.com", "http://localhost:3000", "*.example.org" },
  methods = { "GET", "POST", "PUT", "PATCH", "DELETE" },
  headers = { "authorization", "content-type" },
  expose = { "x-request-id" },
  credentials = true,
  max_age = 600,
})

chi.handle("*", "/*", function(req) return proxy("api") end)
