"""The Teams app package that lets users call the bot: manifest, generated icons, offline checks.

    python -m devtools.teams_app build [--bot-app-id ID] [--out dist/teams-app.zip]
    python -m devtools.teams_app check dist/teams-app.zip [--bot-app-id ID]

``make teams-app`` runs the first; docs/teams.md says how to upload the zip and call the bot.
"""
