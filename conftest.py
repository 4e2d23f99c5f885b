# Fixtures shared by every test folder (the stack, database and Kafka helpers).
pytest_plugins = ["prequal_devstack.testing"]
