"""The ``amas`` command line (typer); each command is thin over ``amas`` engine modules."""
