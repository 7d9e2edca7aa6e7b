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


@pytest.fixture(scope="session")
def _session_redis_url(tmp_path_factory):
    """CHISTONE_TEST_REDIS_URL (CI's Redis), or a private redis-server for the session."""
    import os

    from tests.redis_server import RedisServer

    url = os.environ.get("CHISTONE_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture
def redis_url(_session_redis_url):
    """(url, key prefix) of a real Redis; the prefix is this test's own."""
    from tests.redis_server import delete_prefix, unique_prefix

    prefix = unique_prefix()
    yield _session_redis_url, prefix
    delete_prefix(_session_redis_url, prefix)


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of this test's own, which it may stop and start again."""
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()
