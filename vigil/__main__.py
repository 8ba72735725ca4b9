"""`python -m vigil` is the `vigil` command."""

from vigil.cli.main import main

main()
