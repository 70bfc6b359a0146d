"""The `dsc` command line (typer + rich): `dsc.cli.app` defines the app and its commands."""
from dsc.cli.app import app, main

__all__ = ["app", "main"]
