"""The routes of the web app, one router per kind: :mod:`.service` (page, health, metrics,
schema), :mod:`.jobs` (submit, list, follow, cancel) and :mod:`.results` (downloads)."""
