"""The API's request metrics: a count by route, method and status, and a latency histogram.

A pure-ASGI middleware labels each request with the template of the route FastAPI matched
(`scope["route"]`, which FastAPI sets for its API routes). The prometheus-fastapi-instrumentator
it replaces matched every request against the routes a second time and built a request, a
response and an info object for it: 14-17 us of the 160 us the API's own layers spent on a POST
(docs/performance.md, twelfth look). Only a request to a plain Starlette route (`/metrics`, the
OpenAPI document and the docs pages, for which FastAPI sets no `scope["route"]`) is matched
again here, against the app's routes.

The label is the route's own path: the API registers its routes without a prefix or a mount.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Around the 50 ms objective for a POST."""

UNMATCHED = "none"
"""The handler label of a request no route matched (one label, however many paths)."""

REQUESTS = Counter(
    "http_requests_total",
    "Total number of requests by method, status and handler.",
    ["method", "status", "handler"],
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Request latency by method and handler, whatever the status.",
    ["method", "handler"],
    buckets=LATENCY_BUCKETS_S,
)


def route_template(scope: Scope) -> str:
    """The path template of the route that handled the request, or UNMATCHED."""
    route = scope.get("route")
    if route is not None:
        return str(route.path)
    partial = UNMATCHED  # the path matched, not the method (a 405), as the router decides
    for candidate in getattr(scope.get("app"), "routes", ()):
        match = candidate.matches(scope)[0]
        if match == Match.FULL:
            return str(getattr(candidate, "path", UNMATCHED))
        if match == Match.PARTIAL and partial == UNMATCHED:
            partial = str(getattr(candidate, "path", UNMATCHED))
    return partial


class RequestMetrics:
    """Counts and times every HTTP request except those to `excluded` routes."""

    def __init__(self, app: ASGIApp, *, excluded: frozenset[str]) -> None:
        self.app = app
        self._excluded = excluded
        # Each label set's counter and histogram, looked up once: `labels()` locks, builds a
        # key and looks it up in the metric, 1.8 of the 2.7 us a request's metrics cost. Holds
        # exactly the label sets the metrics themselves do.
        self._series: dict[tuple[str, int, str], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception escaped the app

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            handler = route_template(scope)
            if handler not in self._excluded:
                method = scope["method"]
                series = self._series.get((method, status, handler))
                if series is None:
                    series = self._series[method, status, handler] = (
                        REQUESTS.labels(method, str(status), handler),
                        LATENCY.labels(method, handler),
                    )
                series[0].inc()
                series[1].observe(time.perf_counter() - started)
