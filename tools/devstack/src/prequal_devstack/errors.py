class StackError(Exception):
    """Something the user must fix; the message says what."""
