"""``python -m synister``: the ``synister`` command (what submitted jobs run)."""

from synister.cli import main

main()
