"""Function triggers. Each module is the story of one kind of request; logic lives in ``shared``.

Collaborators come from :func:`shared.services.app_services` (one set per event loop); the core
functions take them as arguments.
"""
