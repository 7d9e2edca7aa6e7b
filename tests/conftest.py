import pytest


@pytest.fixture
def actor():
    from tenants.audit import Actor  # imported late: engine tests run without Django settings

    return Actor(name="tester")


@pytest.fixture
def tenant_factory(db, actor):
    from tenants import services

    def make(slug="acme", **kwargs):
        kwargs.setdefault("name", slug.title())
        if "domains" not in kwargs and "path_prefix" not in kwargs:
            kwargs["domains"] = [f"{slug}.example.com"]
        return services.create_tenant(actor=actor, slug=slug, **kwargs)

    return make


@pytest.fixture(autouse=True, scope="session")
def _quiet_http_client_logs():
    import logging

    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
