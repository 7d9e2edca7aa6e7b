"""WebSocket connections on the data plane: routed like any request, relayed to a backend.

A request with `Upgrade: websocket` arrives as an ASGI `websocket` scope. It goes through the
same steps as an HTTP request (routing.gateway): validation, tenant resolution, the tenant's
script with `req.websocket == true` (middleware included, and scripts that wait: a forward-auth
`http.request` runs before the upgrade), then `routing.plan.decide`. What happens next:

- **proxy**: the gateway opens a WebSocket to the backend (`ws://` or `wss://` from the
  backend's URL; the same path, query and header rules as HTTP proxying), and only when the
  backend accepted does it accept the client's upgrade, with the subprotocol the backend chose.
  Then messages are relayed both ways until either side closes; the close code and reason
  pass through.
- **reject / respond / any gateway error**: an HTTP answer before the upgrade, through the
  ASGI "websocket.http.response" extension (uvicorn has it; the daphne adapter adds it). On a
  server without it the connection is refused with `websocket.close` (the server answers 403).
- a backend that refuses the upgrade (any status but 101): 502 before the upgrade; one that
  cannot be reached: 502, or 504 when the connect timed out (another healthy backend is
  tried first when the plan has one).

The handshake towards the backend: the hop-by-hop headers are removed as for HTTP (Upgrade and
Connection among them), and so are the client's own handshake headers (Sec-WebSocket-Key,
-Version, -Extensions): the gateway's client makes its own. Sec-WebSocket-Protocol becomes
the list of subprotocols offered to the backend. No extension (permessage-deflate) is offered
to the backend: messages are relayed whole, the compression of each hop is that hop's affair.

Relaying: ASGI carries whole messages, so a fragmented message arrives reassembled and is
sent on whole (its boundaries and its type, text or binary, are kept). Pings and pongs are
answered on each hop by that hop's peer (ASGI has no control frames). Limits: a message
larger than `WEBSOCKET_MAX_MESSAGE_BYTES` closes both sides with 1009; no message either way
for `WEBSOCKET_IDLE_TIMEOUT_S` closes both with 1001. A backend that drops the connection
without a close frame (or breaks the protocol) closes the client with 1014 (bad gateway);
a failure of the gateway itself with 1011. A client that goes away without a close frame
closes the backend with 1001.

Every open connection is a `Session` in `WebSocketGateway.sessions`: counted per tenant and
backend (routing.stats), closed with 1001 by `close_all()` when a draining worker's time is up,
and written to the access log when it ends (duration, messages each way, close code).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State
from websockets.uri import WebSocketURI

from luascripts.engine.effects import BodyAnswer, Head, OpenUpstream, ReadResponseBody
from luascripts.engine.types import ExchangeAction, Outcome, ResponsePatch
from routing import respond
from routing.errors import (
    BackendBroke,
    BackendRefused,
    ConfigNotLoaded,
    ConnectTimeout,
    GatewayError,
    TenantNotFound,
    TenantUnavailable,
    UpgradeRefused,
    error_response,
)
from routing.exchange import LiveEffects, RequestBody
from routing.logs import current_request
from routing.patch import frame_answer, patch_headers
from routing.plan import UpstreamPlan, decide
from routing.request import ClientRequest, parse_scope
from routing.request_id import new_request_id
from routing.snapshot import BackendEntry, TenantEntry
from routing.stats import access_line, log_access, websocket_fields
from routing.types import Receive, Scope, Send

if TYPE_CHECKING:
    from routing.gateway import Gateway

log = logging.getLogger("chistone.websocket")

HTTP_RESPONSE_EXTENSION = "websocket.http.response"
# The client's handshake headers: each hop makes its own.
HANDSHAKE_HEADERS = frozenset({
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
    "sec-websocket-accept", "sec-websocket-protocol",
})
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
NO_STATUS = 1005
ABNORMAL = 1006
TOO_BIG = 1009
INTERNAL_ERROR = 1011
BAD_GATEWAY = 1014
CLOSE_TIMEOUT_S = 5.0  # how long a closing handshake with the backend may take
BACKEND_PING_INTERVAL_S = 20.0  # keep-alive pings towards the backend (a dead one is noticed)


class UpgradeFailed(Exception):
    """The backend handshake failed before any message: `error` is the client's answer."""

    def __init__(self, error: GatewayError, *, sent: bool) -> None:
        super().__init__(error.detail)
        self.error = error
        self.sent = sent  # the request reached the backend (no retry elsewhere)


class BackendSocket(ClientConnection):
    """websockets' asyncio client connection, with the handshake's headers exactly the
    plan's: Host is the backend's Host header (not the one built from the address), nothing
    of the library's own (no User-Agent)."""

    def __init__(self, protocol: ClientProtocol, host: str, **kwargs: Any) -> None:
        super().__init__(protocol, **kwargs)
        connect = protocol.connect

        def request_with_our_host() -> Any:
            request = connect()
            headers = Headers()
            headers["Host"] = host
            for name, value in request.headers.raw_items():
                if name.lower() != "host":
                    headers[name] = value
            request.headers = headers
            return request

        protocol.connect = request_with_our_host  # type: ignore[method-assign]


def _handshake_headers(headers: Iterable[tuple[str, str]]) -> tuple[Headers, list[str]]:
    """The plan's headers for the backend (minus Host and the client's handshake headers),
    and the subprotocols the client (or the script) offered."""
    out = Headers()
    offered: list[str] = []
    for name, value in headers:
        if name == "sec-websocket-protocol":
            offered.extend(token.strip() for token in value.split(",") if token.strip())
        elif name not in HANDSHAKE_HEADERS and name != "host":
            out[name] = value  # latin-1 text, one character per byte: written as the bytes
    return out, offered


class BackendConnector:
    """Opens WebSockets to backends for planned requests, with the plan's timeouts."""

    def __init__(self, *, health: Any, max_message_bytes: int, retries: int) -> None:
        self.health = health
        self.max_message_bytes = max_message_bytes
        self.retries = retries
        self._tls: ssl.SSLContext | None = None

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def connect(self, plan: UpstreamPlan, ex: Any) -> tuple[BackendSocket, BackendEntry]:
        """An open connection to the plan's backend (or, when it cannot be reached, to a
        fallback); raises a GatewayError for the client."""
        backend = plan.backend
        fallbacks = list(plan.fallbacks)
        tries = 0
        while True:
            try:
                return await self._open(plan, backend), backend
            except UpgradeFailed as failed:
                ex.backend = backend.name
                self.health.record_failure(backend, failed.error.detail)
                fallbacks = [b for b in fallbacks if self.health.is_healthy(b)]
                if not failed.sent and fallbacks and tries < self.retries:
                    tries += 1
                    ex.retries += 1
                    log.info("request %s: %s failed (%s), trying %s", ex.request_id,
                             backend.name, failed.error.code, fallbacks[0].name)
                    backend = fallbacks.pop(0)
                    continue
                raise failed.error from None

    async def _open(self, plan: UpstreamPlan, backend: BackendEntry) -> BackendSocket:
        origin = urlsplit(backend.origin)
        secure = origin.scheme == "https"
        host = origin.hostname or ""
        port = origin.port or (443 if secure else 80)
        path = backend.base_path + plan.path[len(plan.backend.base_path):]
        uri = WebSocketURI(secure, host, port, path, plan.query)
        headers, offered = _handshake_headers(plan.headers_for(backend))
        protocol = ClientProtocol(uri, subprotocols=offered or None,  # type: ignore[arg-type]
                                  max_size=self.max_message_bytes, logger=log)
        loop = asyncio.get_running_loop()
        name = backend.name
        try:
            async with asyncio.timeout(plan.connect_timeout_s):
                _transport, connection = await loop.create_connection(
                    lambda: BackendSocket(protocol, backend.host_header,
                                          ping_interval=BACKEND_PING_INTERVAL_S,
                                          ping_timeout=BACKEND_PING_INTERVAL_S,
                                          close_timeout=CLOSE_TIMEOUT_S),
                    host, port, ssl=self._tls_context() if secure else None,
                    server_hostname=host if secure else None)
        except TimeoutError:
            raise UpgradeFailed(ConnectTimeout(f"Backend {name!r} did not accept a connection "
                                               f"in time."), sent=False) from None
        except OSError:
            raise UpgradeFailed(BackendRefused(f"Backend {name!r} refused the connection or "
                                               f"could not be reached."), sent=False) from None
        try:
            async with asyncio.timeout(plan.read_timeout_s):
                await connection.handshake(headers, None)
        except InvalidStatus as exc:
            connection.transport.abort()
            status = exc.response.status_code
            raise UpgradeFailed(UpgradeRefused(
                f"Backend {name!r} refused the WebSocket upgrade (it answered {status})."),
                sent=True) from None
        except TimeoutError:
            connection.transport.abort()
            raise UpgradeFailed(BackendBroke(f"Backend {name!r} did not answer the WebSocket "
                                             f"handshake in time."), sent=True) from None
        except (InvalidHandshake, ConnectionClosed, OSError, EOFError) as exc:
            connection.transport.abort()
            raise UpgradeFailed(BackendBroke(
                f"Backend {name!r} sent an invalid WebSocket handshake ({exc})."),
                sent=True) from None
        connection.start_keepalive()
        return connection


class Session:
    """One relayed connection: who, where, and what went through it."""

    __slots__ = ("backend", "backend_socket", "bytes_in", "bytes_out", "close_code",
                 "close_reason", "closed_by", "closing", "last_activity", "messages_in",
                 "messages_out", "opened", "send", "tenant", "terminate_task")

    def __init__(self, tenant: str, backend: str, backend_socket: BackendSocket,
                 send: Send) -> None:
        self.tenant = tenant
        self.backend = backend
        self.backend_socket = backend_socket
        self.send = send
        self.opened = time.monotonic()
        self.last_activity = self.opened
        self.messages_in = 0  # client to backend
        self.messages_out = 0  # backend to client
        self.bytes_in = 0
        self.bytes_out = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed_by = ""
        self.closing = False
        self.terminate_task: asyncio.Task[None] | None = None

    def ended(self, code: int | None, reason: str, by: str) -> None:
        if self.close_code is None and not self.closed_by:
            self.close_code, self.close_reason, self.closed_by = code, reason, by

    async def terminate(self, code: int, reason: str) -> None:
        """The gateway ends the connection: both sides get `code` and `reason`."""
        if self.closing:
            return
        self.closing = True
        self.ended(code, reason, "gateway")
        try:
            await self.send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception:  # the client is gone already
            pass
        await _close_backend(self.backend_socket, code, reason)

    def start_terminate(self, code: int, reason: str) -> None:
        if self.terminate_task is None and not self.closing:
            self.terminate_task = asyncio.get_running_loop().create_task(
                self.terminate(code, reason))


async def _close_backend(socket: BackendSocket, code: int, reason: str) -> None:
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S + 1):
            if code in (NO_STATUS, ABNORMAL):
                await socket.close(GOING_AWAY if code == ABNORMAL else 1000, reason)
            else:
                await socket.close(code, reason)
    except Exception:
        socket.transport.abort()


def _client_close_code(code: int) -> int:
    """What the backend is told when the client closed with `code` (1005 and 1006 cannot be
    sent in a close frame)."""
    if code == NO_STATUS:
        return 1000
    if code == ABNORMAL or not (1000 <= code <= 4999):
        return GOING_AWAY
    return code


class WebSocketEffects(LiveEffects):
    """A waiting script's answers on a websocket route: when a middleware looks at the
    response (`next()`), the exchange it opens is the backend WebSocket handshake; its head
    is the backend's 101 (or the error the client would get), its body empty."""

    def __init__(self, *, connector: BackendConnector, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connector = connector
        self.sockets: dict[int, tuple[BackendSocket, BackendEntry]] = {}
        self.errors: dict[int, GatewayError] = {}

    async def open_upstream(self, effect: OpenUpstream) -> Head:
        from routing.exchange import _text_pairs

        started = time.perf_counter()
        try:
            plan = self.plan(effect)
            socket, backend = await self.connector.connect(plan, self.ex)
        except GatewayError as error:
            self.errors[effect.exchange] = error
            status, headers, _body = error_response(error, self.request.request_id)
            return Head(status, _text_pairs(headers), None)
        finally:
            self.ex.upstream = (self.ex.upstream or 0.0) + time.perf_counter() - started
        self.sockets[effect.exchange] = (socket, backend)
        response = socket.response
        headers = tuple((name.lower(), value) for name, value in response.headers.raw_items())
        return Head(101, headers, backend.name)

    async def read_response_body(self, effect: ReadResponseBody) -> BodyAnswer:
        error = self.errors.get(effect.exchange)
        if error is not None:
            return BodyAnswer(error_response(error, self.request.request_id)[2])
        return BodyAnswer(b"")

    def take_socket(self, exchange: int) -> tuple[BackendSocket, BackendEntry] | GatewayError:
        opened = self.sockets.pop(exchange, None)
        if opened is not None:
            return opened
        return self.errors.pop(exchange, None) or BackendBroke(
            "The script answered with an exchange that was not opened.")

    def close(self) -> None:
        super().close()
        for socket, _backend in self.sockets.values():
            socket.transport.abort()  # opened by a middleware, not the one it answered with
        self.sockets.clear()


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class WebSocketGateway:
    """The data plane's ASGI application for `websocket` scopes (see the module docstring).

    It shares the HTTP gateway's snapshot, health, balancer, counters and script runner."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.conf = gateway.conf
        self.stats = gateway.stats
        self.connector = BackendConnector(
            health=gateway.health, max_message_bytes=self.conf.websocket_max_message_bytes,
            retries=self.conf.retries)
        self.sessions: set[Session] = set()
        self._none_open = asyncio.Event()
        self._none_open.set()

    # -- draining -----------------------------------------------------------------------------
    async def close_all(self, code: int = GOING_AWAY,
                        reason: str = "the gateway is shutting down") -> int:
        """Close every open connection with `code` (a draining worker whose time is up);
        returns how many there were, once their closing handshakes ended (bounded)."""
        sessions = list(self.sessions)
        if sessions:
            log.info("closing %d open WebSocket connection(s) with %d", len(sessions), code)
            await asyncio.gather(*(session.terminate(code, reason) for session in sessions),
                                 return_exceptions=True)
        return len(sessions)

    async def wait_closed(self) -> None:
        """Return once no connection is open."""
        await self._none_open.wait()

    # -- one connection -------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from routing.gateway import Exchange

        started = time.perf_counter()
        ex = Exchange(connection=respond.server_connection(scope))
        bound = current_request.set(ex)
        request: ClientRequest | None = None
        session: Session | None = None
        accepted_after: float | None = None
        try:
            message = await receive()
            if message["type"] != "websocket.connect":  # the client left before we started
                ex.status, ex.error = 499, "client_disconnected"
                return
            try:
                request = parse_scope(_as_http(scope), self.conf)
                ex.request_id = request.request_id
                answer = await self._route(scope, request, ex)
            except GatewayError as error:
                ex.request_id = ex.request_id or new_request_id()
                await self._deny_error(scope, send, error, ex, None)
                return
            if len(answer) == 3 and isinstance(answer[0], int):  # an answer of our own
                await self._deny(scope, send, *answer, ex)
                return
            socket, backend, patch = answer
            try:
                await self._accept(scope, send, socket, ex, patch)
            except _BackendProtocol as exc:
                await self._deny_error(scope, send, BackendBroke(str(exc)), ex, patch)
                return
            except OSError:  # the client left while the backend was being reached
                socket.transport.abort()
                ex.status, ex.error = 499, "client_disconnected"
                return
            accepted_after = time.perf_counter() - started
            session = Session(ex.tenant, backend.name, socket, send)
            await self._relay(session, receive, send, ex.connection)
        except Exception:
            ex.request_id = ex.request_id or new_request_id()
            ex.error = ex.error or "internal_error"
            log.exception("request %s: unexpected error in the WebSocket gateway",
                          ex.request_id)
            if session is not None:
                await session.terminate(INTERNAL_ERROR, "gateway error")
            elif ex.status == 0:
                error = GatewayError("The gateway failed while handling this request; see the "
                                     "gateway log for this request id.")
                try:
                    await self._deny_error(scope, send, error, ex, None)
                except Exception:
                    pass
        finally:
            current_request.reset(bound)
            total = time.perf_counter() - started
            # Counted like a request, with the time to the upgrade (not the connection's life).
            self.stats.observe(ex, accepted_after if accepted_after is not None else total,
                               {"method": "GET", "path": scope.get("path")}, request)
            if session is not None:
                self.sessions.discard(session)
                if not self.sessions:
                    self._none_open.set()
                self.stats.websocket_closed(session.tenant, session.backend,
                                            session.close_code)
            if self.conf.access_log:
                line = access_line(
                    request_id=ex.request_id, tenant=ex.tenant, route=ex.route, method="GET",
                    path=request.raw_path if request else scope.get("path"),
                    status=ex.status, backend=ex.backend or None, sent=ex.sent,
                    upstream=ex.upstream, total=total, lua=ex.lua, retries=ex.retries,
                    error=ex.error or None, client=request.client_ip if request else None)
                log_access(websocket_fields(line, session))

    async def _route(self, scope: Scope, request: ClientRequest, ex: Any
                     ) -> tuple[BackendSocket, BackendEntry, ResponsePatch | None] | tuple[
                         int, list[tuple[bytes, bytes]], bytes]:
        """Resolve, run the script, decide: an open backend socket, or an answer of ours."""
        gateway = self.gateway
        snapshot = gateway.holder.current
        if snapshot is None:
            raise ConfigNotLoaded("The gateway has not loaded its configuration yet.",
                                  retry_after=self.conf.retry_after_s)
        ex.config = snapshot.config_header
        match = snapshot.resolver.resolve(request.host, request.raw_path)
        if match is None:
            raise TenantNotFound("No tenant answers for this host and path.")
        tenant: TenantEntry = match.tenant
        ex.tenant = tenant.slug
        if tenant.unavailable:
            raise TenantUnavailable(f"Tenant {tenant.slug!r} is unavailable: "
                                    f"{tenant.unavailable}.", retry_after=self.conf.retry_after_s)
        outcome: Outcome | None = None
        waited: list[LiveEffects] = []
        try:
            if tenant.script is not None:
                body = RequestBody(_no_body, self.conf.chunk_bytes, 0, self.conf.body_timeout_s)
                outcome = await gateway._run_script(
                    tenant, request, match.path, ex, body, waited, websocket=True,
                    effects=WebSocketEffects, connector=self.connector)
            patch = outcome.patch if outcome is not None else None
            if outcome is not None and type(outcome.action) is ExchangeAction:
                effects = waited[0]
                assert isinstance(effects, WebSocketEffects)
                opened = effects.take_socket(outcome.action.exchange)
                if isinstance(opened, GatewayError):
                    return self._error_answer(opened, request, ex, patch)
                ex.backend = opened[1].name
                return opened[0], opened[1], patch
            try:
                decision = decide(tenant, request, match.path, outcome,
                                  healthy=gateway.health.is_healthy, balancer=gateway.balancer,
                                  total_timeout_s=self.conf.upstream_total_timeout_s)
            except GatewayError as error:
                if patch is None:
                    raise
                return self._error_answer(error, request, ex, patch)
            if type(decision) is not UpstreamPlan:
                return frame_answer(decision.status, list(decision.headers), decision.body,
                                    request.request_id, patch)
            started = time.perf_counter()
            try:
                socket, backend = await self.connector.connect(decision, ex)
            except GatewayError as error:
                if patch is None:
                    raise
                return self._error_answer(error, request, ex, patch)
            finally:
                ex.upstream = (ex.upstream or 0.0) + time.perf_counter() - started
            ex.backend = backend.name
            return socket, backend, patch
        finally:
            if waited:
                waited[0].close()

    # -- answers before the upgrade ------------------------------------------------------------
    def _error_answer(self, error: GatewayError, request: ClientRequest, ex: Any,
                      patch: ResponsePatch | None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        status, headers, body = error_response(error, request.request_id)
        if error.status >= 500:
            log.warning("%s %s: %s (request %s)", error.status, error.code, error.detail,
                        request.request_id)
        ex.error = error.code
        return frame_answer(status, headers, body, request.request_id, patch)

    async def _deny_error(self, scope: Scope, send: Send, error: GatewayError, ex: Any,
                          patch: ResponsePatch | None) -> None:
        status, headers, body = error_response(error, ex.request_id)
        ex.error = error.code
        if error.status >= 500:
            log.warning("%s %s: %s (request %s)", error.status, error.code, error.detail,
                        ex.request_id)
        headers.append((b"x-request-id", ex.request_id.encode("latin-1")))
        await self._deny(scope, send, status, headers, body, ex)

    async def _deny(self, scope: Scope, send: Send, status: int,
                    headers: list[tuple[bytes, bytes]], body: bytes, ex: Any) -> None:
        """An HTTP answer instead of the upgrade; without the server's extension for that, a
        refusal (the server answers 403)."""
        if ex.config is not None:
            headers = [*headers, ex.config]
        extensions = scope.get("extensions") or {}
        if HTTP_RESPONSE_EXTENSION in extensions:
            await send({"type": "websocket.http.response.start", "status": status,
                        "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
            ex.status, ex.sent = status, len(body)
        else:
            await send({"type": "websocket.close", "code": 1008})
            ex.status, ex.sent = 403, 0

    # -- the upgrade and the relay --------------------------------------------------------------
    async def _accept(self, scope: Scope, send: Send, socket: BackendSocket, ex: Any,
                      patch: ResponsePatch | None) -> None:
        response = socket.response
        chosen = response.headers.get("Sec-WebSocket-Protocol") if response else None
        headers: list[tuple[bytes, bytes]] = [(b"x-request-id", ex.request_id.encode("latin-1"))]
        if patch is not None:
            headers = patch_headers(headers, patch)
        if ex.config is not None:
            headers.append(ex.config)
        message: dict[str, Any] = {"type": "websocket.accept", "headers": headers}
        if chosen:
            if chosen not in (scope.get("subprotocols") or ()):
                socket.transport.abort()
                raise _BackendProtocol(chosen)
            message["subprotocol"] = chosen
        await send(message)
        ex.status = 101

    async def _relay(self, session: Session, receive: Receive, send: Send,
                     connection: respond.ServerConnection | None) -> None:
        self.sessions.add(session)
        self._none_open.clear()
        self.stats.websocket_opened(session.tenant, session.backend)
        loop = asyncio.get_running_loop()
        idle = self.conf.websocket_idle_timeout_s
        timer: asyncio.TimerHandle | None = None

        def check_idle() -> None:
            nonlocal timer
            quiet = time.monotonic() - session.last_activity
            if quiet >= idle:
                timer = None
                session.start_terminate(GOING_AWAY, "idle timeout")
            else:
                timer = loop.call_later(idle - quiet, check_idle)

        timer = loop.call_later(idle, check_idle)
        to_client = loop.create_task(self._backend_to_client(session, send, connection))
        try:
            await self._client_to_backend(session, receive)
            # The client is done: the backend side ends with its closing handshake.
            try:
                await asyncio.wait_for(asyncio.shield(to_client), CLOSE_TIMEOUT_S + 2)
            except TimeoutError:
                to_client.cancel()
        finally:
            if timer is not None:
                timer.cancel()
            if not to_client.done():
                to_client.cancel()
            if session.terminate_task is not None:
                await asyncio.gather(session.terminate_task, return_exceptions=True)
            if session.backend_socket.state is not State.CLOSED:
                session.backend_socket.transport.abort()

    async def _client_to_backend(self, session: Session, receive: Receive) -> None:
        socket = session.backend_socket
        limit = self.conf.websocket_max_message_bytes
        key = (session.tenant, session.backend, "to_backend")
        counts = self.stats.websocket_messages
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                data = message.get("text")
                if data is None:
                    data = message.get("bytes") or b""
                if len(data) > limit:
                    session.start_terminate(TOO_BIG, "message too big")
                    continue
                session.last_activity = time.monotonic()
                session.messages_in += 1
                session.bytes_in += len(data)
                counts[key] = counts.get(key, 0) + 1
                if session.closing:
                    continue
                try:
                    await socket.send(data)
                except ConnectionClosed:
                    continue  # the other direction reports how the backend ended
            elif kind == "websocket.disconnect":
                code = message.get("code", NO_STATUS)
                reason = message.get("reason") or ""
                session.ended(code, reason, "client")
                if not session.closing:
                    session.closing = True
                    await _close_backend(socket, _client_close_code(code), reason)
                return

    async def _backend_to_client(self, session: Session, send: Send,
                                 connection: respond.ServerConnection | None) -> None:
        """Relays the backend's messages; waits while the client is behind (the server
        adapter's back-pressure, routing.respond), so the backend is read no faster."""
        socket = session.backend_socket
        key = (session.tenant, session.backend, "to_client")
        counts = self.stats.websocket_messages
        while True:
            try:
                data = await socket.recv()
            except ConnectionClosed:
                break
            session.last_activity = time.monotonic()
            session.messages_out += 1
            session.bytes_out += len(data)
            counts[key] = counts.get(key, 0) + 1
            if session.closing:
                continue
            if isinstance(data, str):
                await send({"type": "websocket.send", "text": data})
            else:
                await send({"type": "websocket.send", "bytes": data})
            await respond.wait_writable(connection)
        if session.closing:
            return
        session.closing = True
        code, reason = _backend_ending(socket)
        if code == BAD_GATEWAY:
            log.warning("request %s: backend %s ended the WebSocket connection: %s",
                        getattr(current_request.get(), "request_id", "?"), session.backend,
                        reason)
        session.ended(code, reason, "backend")
        try:
            await send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception:  # the client is gone as well
            pass


def _backend_ending(socket: BackendSocket) -> tuple[int, str]:
    """The close code and reason the client gets when the backend side ended by itself."""
    protocol = socket.protocol
    received, sent = protocol.close_rcvd, protocol.close_sent
    if sent is not None and protocol.close_rcvd_then_sent is not True:
        # The gateway's client closed first: the backend sent too large a message, broke
        # the protocol or stopped answering pings.
        if sent.code == TOO_BIG:
            return TOO_BIG, "the backend sent a message larger than the gateway relays"
        return BAD_GATEWAY, f"the backend broke the WebSocket protocol ({sent.reason or sent.code})"
    if received is not None:
        return (1000 if received.code == NO_STATUS else received.code), received.reason
    return BAD_GATEWAY, "the backend closed the connection without a close frame"


class _BackendProtocol(Exception):
    def __init__(self, chosen: str) -> None:
        super().__init__(f"the backend chose subprotocol {chosen!r}, which the client did not "
                         f"offer")


def _as_http(scope: Scope) -> Scope:
    """The websocket scope as routing.request reads an http one: a GET, scheme http(s)."""
    http = dict(scope)
    http["method"] = "GET"
    http["scheme"] = "https" if scope.get("scheme") == "wss" else "http"
    return http
