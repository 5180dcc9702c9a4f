"""`python -m scail` is the `scail` command."""

from scail.cli import main

main()
