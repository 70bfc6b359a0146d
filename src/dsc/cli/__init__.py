"""The `dsc` command line (typer + rich): `root` holds the typer app, its first commands and the
console helpers the other command modules share; `main` there is the entry point."""
