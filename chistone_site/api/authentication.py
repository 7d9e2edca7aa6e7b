"""API authentication: API keys (`Bearer` or `Api-Key` scheme) and staff sessions. No Basic.

Every authenticated request carries a `Principal` (as `request.auth`) that says what it may do:
its scopes, the tenants it reaches and the audit actor its writes are recorded under.
"""

from __future__ import annotations

from dataclasses import dataclass

from rest_framework import authentication, exceptions

from chistone_site.api import keys
from chistone_site.api.models import SCOPE_OVERRIDE, SCOPES, ApiKey
from tenants.audit import Actor

SCHEMES = ("bearer", "api-key")


@dataclass(frozen=True)
class Principal:
    """Who is calling and what they may reach."""

    actor: Actor
    scopes: frozenset[str]
    all_tenants: bool
    tenant_ids: frozenset[int]
    throttle_id: str
    key: ApiKey | None = None

    @classmethod
    def for_key(cls, key: ApiKey) -> Principal:
        return cls(
            actor=Actor(name=f"apikey:{key.name}"),
            scopes=frozenset(key.scopes),
            all_tenants=key.all_tenants,
            tenant_ids=frozenset(key.tenants.values_list("pk", flat=True)),
            throttle_id=f"key:{key.pk}",
            key=key,
        )

    @classmethod
    def for_staff(cls, user) -> Principal:
        """Staff act with every scope on the tenants the admin lets them see: all for a
        superuser, their OperatorAccess list otherwise (one scoping rule for admin and API).
        Overriding failed tests is the one exception: only with its Django permission."""
        from chistone_site.actions.scripts import OVERRIDE_PERMISSION
        from tenants.admin_scoping import sees_all_tenants, visible_tenants

        all_tenants = sees_all_tenants(user)
        ids = frozenset() if all_tenants else frozenset(
            visible_tenants(user).values_list("pk", flat=True))
        scopes = frozenset(s for s in SCOPES
                           if s != SCOPE_OVERRIDE or user.has_perm(OVERRIDE_PERMISSION))
        return cls(actor=Actor.for_user(user), scopes=scopes, all_tenants=all_tenants,
                   tenant_ids=ids, throttle_id=f"user:{user.pk}")


class KeyUser:
    """`request.user` for a key: authenticated, but no Django user and no staff powers."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = id = None

    def __init__(self, key: ApiKey) -> None:
        self.key = key
        self.username = f"apikey:{key.name}"

    def get_username(self) -> str:
        return self.username

    def __str__(self) -> str:
        return self.username


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <key>` or `Authorization: Api-Key <key>`."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() not in SCHEMES:
            # Basic and anything else are refused outright rather than ignored.
            raise exceptions.AuthenticationFailed(
                "Unsupported authorization scheme; send 'Authorization: Bearer <API key>'.")
        raw = raw.strip()
        if not raw or " " in raw:
            raise exceptions.AuthenticationFailed("The Authorization header holds no single key.")
        key, reason = keys.find_key(raw)
        if key is None:
            raise exceptions.AuthenticationFailed(reason)
        keys.note_key_used(key)
        return KeyUser(key), Principal.for_key(key)

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) to a request without credentials.
        return 'Bearer realm="chistone-api"'


class StaffSessionAuthentication(authentication.SessionAuthentication):
    """A logged-in, active staff user's session, CSRF enforced (DRF's check)."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        user, _ = result
        if not user.is_staff:
            return None
        return user, Principal.for_staff(user)


def principal_of(request) -> Principal | None:
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, Principal) else None
