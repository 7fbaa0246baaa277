"""`tuneline` command line (Typer): the stage commands dvc.yaml runs (stages.py) and the user-facing commands
(app.py). Glue only: each command loads params once, calls one function in tasks/ or flows/, and prints the result."""
from tasks.cli.app import app

__all__ = ["app"]
