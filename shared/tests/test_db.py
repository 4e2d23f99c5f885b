"""The engine every service uses, on the real database."""

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from prequal_devstack.testing import StackInfo
from prequal_shared.config import CommonSettings
from prequal_shared.db import create_engine


async def test_database_errors_do_not_carry_the_statement_values(stack: StackInfo) -> None:
    """Errors are logged, and a failed batch insert listed every applicant's name and PAN.
    (What PostgreSQL itself quotes in a message, e.g. the value that broke a cast, stays.)"""
    engine = create_engine(
        CommonSettings(database_url=stack.database_url), application_name="test-db"
    )
    try:
        async with engine.connect() as conn:
            with pytest.raises(DBAPIError) as caught:
                await conn.execute(
                    text("SELECT CAST(:v AS text) WHERE 1 / 0 = 1"), {"v": "Asha Rao ABCDE1234F"}
                )
    finally:
        await engine.dispose()
    assert "division by zero" in str(caught.value)
    assert "1 / 0" in str(caught.value)  # the statement is still named
    assert "Asha Rao" not in str(caught.value)
    assert "ABCDE1234F" not in str(caught.value)
