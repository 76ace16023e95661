"""`python -m evomerge ...` runs the command line."""

from evomerge.commands.cli import main

if __name__ == "__main__":
    main()
