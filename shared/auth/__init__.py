"""Authentication of inbound requests (the platform's signed notifications).

:mod:`shared.auth.inbound` checks the bearer token; :mod:`shared.auth.errors` names each way it
can fail. They are imported from there: the webhook's module needs only the errors at import time.
"""
