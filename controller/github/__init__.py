"""The GitHub flow: webhook intake (`webhook`, pure rules in `events`), the REST client
(`client`), progress comments on the issue (`notifier`), and their wiring from settings
(`integration`). See docs/github.md.

Nothing here imports the handlers or the supervisor; `handlers.configure` wires it in.
"""
