"""TLS (rediss:// with a CA file) and ACL user/password URLs; credentials never leak."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator

import pytest

from resilience import RedisStore, SlidingWindowLimiter, StoreUnavailable
from tests.fault_servers import TLSRedis

pytestmark = pytest.mark.redis

USER = "svc-user"
PASSWORD = "Pa55-w0rd-S3cret-xyz"


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[TLSRedis]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not found (needed to generate the test certificates)")
    with TLSRedis(USER, PASSWORD) as server:
        yield server


def _assert_clean(*texts: str) -> None:
    for t in texts:
        assert PASSWORD not in t, t
        assert f"{USER}:" not in t, t


async def test_tls_acl_store_works_and_hides_credentials(
    tls_redis: TLSRedis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisStore.from_url(
        tls_redis.url(), prefix=prefix, timeout=2.0, ssl_ca_certs=tls_redis.certs["ca"]
    )
    lim = SlidingWindowLimiter(2, 60.0, store=store, name="tls", guard=0)
    assert (await lim.try_acquire()).allowed
    assert (await lim.try_acquire()).allowed
    assert not (await lim.try_acquire()).allowed
    _assert_clean(repr(store), store.label, repr(lim), repr(lim.store))
    await store.aclose()


async def test_wrong_password_and_dead_server_messages_hide_credentials(
    tls_redis: TLSRedis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bad = RedisStore.from_url(
        tls_redis.url(password=PASSWORD + "-wrong"),
        prefix=prefix,
        timeout=1.0,
        ssl_ca_certs=tls_redis.certs["ca"],
    )
    lim = SlidingWindowLimiter(2, 60.0, store=bad, name="tls", guard=0, fallback="deny")
    with pytest.raises(StoreUnavailable) as info:
        await lim.try_acquire()
    texts = [str(info.value), repr(info.value), repr(bad), caplog.text]
    cause = info.value.__cause__
    if cause is not None:
        texts.append(str(cause))
    _assert_clean(*texts)
    assert PASSWORD + "-wrong" not in "".join(texts)
    await bad.aclose()
    # Untrusted certificate (no CA given): refused, and the message is clean too.
    untrusted = RedisStore.from_url(tls_redis.url(), prefix=prefix, timeout=1.0)
    lim2 = SlidingWindowLimiter(2, 60.0, store=untrusted, name="tls", fallback="deny")
    with pytest.raises(StoreUnavailable) as info2:
        await lim2.try_acquire()
    _assert_clean(str(info2.value), repr(untrusted), caplog.text)
    await untrusted.aclose()
