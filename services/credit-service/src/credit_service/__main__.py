"""credit-service: consumes submitted applications, publishes credit reports."""

from __future__ import annotations

from credit_service.messaging.handler import CreditReportHandler
from credit_service.settings import CreditSettings
from prequal_shared.config import load_settings
from prequal_shared.logging import configure_logging
from prequal_shared.runtime import ConsumerService, nothing_to_close, run, run_consumer_service

SERVICE = "credit-service"


def main() -> None:
    settings = load_settings(CreditSettings)
    configure_logging(service=SERVICE, level=settings.log_level, fmt=settings.log_format)
    spec = ConsumerService(
        name=SERVICE,
        topic=settings.topic_applications_submitted,
        group_id=settings.credit_consumer_group,
        ops_port=settings.credit_ops_port,
        handler=lambda producer: nothing_to_close(
            CreditReportHandler(producer=producer, topic=settings.topic_credit_reports)
        ),
    )
    run(run_consumer_service(spec, settings, ops_host=settings.ops_host))


if __name__ == "__main__":
    main()
