"""Rate limits on endpoints that cost a worker's time, counted in the platform's Redis per API key, else per
logged-in user, else per client address: `LIVE_RATE.check(request)` where the work is about to be sent."""

import math
import time
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from django.http import HttpRequest
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from atlas.accounts.auth import API_KEY_HEADER
from atlas.accounts.selectors import api_key_user
from atlas.accounts.services import api_key_digest

# Every key this module writes in Redis starts with this, beside Celery's own keys.
KEY_PREFIX = "atlas-ratelimit"


class RateLimited(Exception):
    """A request over its limit; `retry_after` is how many seconds until the window has room for it."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.message, self.retry_after = message, retry_after


@cache
def _limiter(storage_url: str) -> MovingWindowRateLimiter:
    """One limiter per process (its Redis connection pool is shared by the requests)."""
    return MovingWindowRateLimiter(storage_from_string(storage_url, key_prefix=KEY_PREFIX))


@cache
def _rate_item(rate: str) -> RateLimitItem:
    return parse(rate)


def request_identity(request: HttpRequest) -> str:
    """Who the limit counts: a valid API key (an invalid one counts as its address, so made-up keys gain nothing),
    else the logged-in user, else the client's address."""
    secret = request.headers.get(API_KEY_HEADER, "").strip()
    if secret and api_key_user(secret) is not None:
        return f"key:{api_key_digest(secret)}"
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"address:{request.META.get('REMOTE_ADDR', '')}"


@dataclass(frozen=True)
class RateLimit:
    """A limit named by its scope (its own count in Redis) and read from the setting `setting` ("30/minute")."""

    scope: str
    setting: str

    def check(self, request: HttpRequest) -> None:
        """Counts this request; raises RateLimited, counting nothing, when the window is full."""
        rate: str = getattr(settings, self.setting)
        item, identity = _rate_item(rate), request_identity(request)
        limiter = _limiter(settings.ATLAS_RATE_LIMIT_STORAGE)
        if limiter.hit(item, self.scope, identity):
            return
        reset = limiter.get_window_stats(item, self.scope, identity).reset_time
        retry_after = max(1, math.ceil(reset - time.time()))
        raise RateLimited(f"Over the limit of {rate} {self.scope} requests ({self.setting}); try again in "
                          f"{retry_after} s, or ask the admin to raise {self.setting}.", retry_after)


# Live activations and activation search: each request runs the model on a worker.
LIVE_RATE = RateLimit(scope="live", setting="ATLAS_LIVE_RATE")
