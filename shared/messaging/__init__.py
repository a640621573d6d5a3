"""Chat messages to the bot (``POST /api/messages``): what Bot Framework's Bot Connector posts.

Teams delivers chat activities through the Bot Connector, which signs each with Bot Framework's
own keys. :mod:`shared.messaging.auth` checks that token (and the claims Microsoft's SDKs check
on top of it), :mod:`shared.messaging.activity` reads the activity, and
:mod:`shared.messaging.connector` sends the bot's reply back to the activity's ``serviceUrl``.
"""
