"""``python -m cli`` runs the dockyard command."""

from cli.main import main

main()
