from tests.mailbox import inbox

__all__ = ["inbox"]
