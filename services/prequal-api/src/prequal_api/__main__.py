"""prequal-api: `prequal-api` (or `python -m prequal_api`) serves the API with uvicorn."""

from __future__ import annotations

import uvicorn

from prequal_api.settings import ApiSettings
from prequal_shared.config import load_settings


def main() -> None:
    settings = load_settings(ApiSettings)
    uvicorn.run(
        "prequal_api.main:create_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.api_workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
