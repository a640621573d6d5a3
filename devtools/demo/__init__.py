"""The one-command demo (``make demo``) and the developer stack (``make start``).

Both run everything on 127.0.0.1: an in-memory Azurite, the Graph simulator and the app, under
``func start`` when Core Tools are installed, else the local Functions host. See docs/demo.md.
Development only: ``devtools/`` is not deployed.
"""
