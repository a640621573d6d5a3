"""Function triggers. Each module is the story of one kind of request; logic lives in ``shared``.

Modules import only ``azure.functions`` at import time (cold start); the rest is imported where
it is used.
"""
