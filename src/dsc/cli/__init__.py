"""The `dsc` command line (typer + rich): `dsc.cli.root` holds the typer app, its first commands and the console helpers the other command modules share."""
from dsc.cli.root import app, main

__all__ = ["app", "main"]
