"""prequal-api: `prequal-api` (or `python -m prequal_api`) serves the API with uvicorn."""

from __future__ import annotations

import os
import shutil
import tempfile

import uvicorn

from prequal_api.server import HttpProtocol
from prequal_api.settings import ApiSettings
from prequal_shared.config import load_settings


def main() -> None:
    settings = load_settings(ApiSettings)
    metrics_dir = None
    if settings.api_workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Several worker processes: each writes its metrics to files in a shared folder and a
        # scrape of any worker reports the sum (prometheus_client's multiprocess mode). Set
        # before the workers start, since prometheus_client reads it when first imported.
        metrics_dir = tempfile.mkdtemp(prefix="prequal-api-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run(
            "prequal_api.main:create_app",
            factory=True,
            http=HttpProtocol,  # each response in one write (see prequal_api.server)
            host=settings.api_host,
            port=settings.api_port,
            workers=settings.api_workers,
            log_config=None,
            access_log=False,
            # uvicorn's default, 5 s, closes idle connections that clients (and load
            # balancers) keep reusing: a request sent on one as it closes is reset. The bench
            # saw 4 such resets in 60,000 requests.
            timeout_keep_alive=settings.api_keep_alive_s,
            timeout_graceful_shutdown=10,
        )
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
