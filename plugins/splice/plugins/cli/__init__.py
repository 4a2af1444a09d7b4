"""The ``splice`` command line (main.py): one subcommand per module-level function, imported lazily."""
