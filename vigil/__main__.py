"""`python -m vigil` is the `vigil` command."""

from vigil.cli.main import main

# Guarded: the manager's writer process is spawned, and a spawned child imports this module again.
if __name__ == "__main__":
    main()
