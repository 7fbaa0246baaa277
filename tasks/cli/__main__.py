"""`python -m tasks.cli ...`: the same commands as `tuneline ...`."""
from tasks.cli.app import app

app()
