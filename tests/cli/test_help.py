"""`dsc --help` and each command's help show flags as flags (no `<bool>` value to type)."""
from typer.testing import CliRunner

from dsc.cli.root import app

runner = CliRunner()


def test_flags_take_no_value_in_the_help():
    for args in (["--help"], ["build", "--help"], ["verify", "--help"], ["inspect", "--help"], ["plan", "--help"]):
        r = runner.invoke(app, args, env={"COLUMNS": "160"})
        assert r.exit_code == 0, r.output
        lines = [line for line in r.output.splitlines() if "<bool>" in line and "--help" not in line]
        assert not lines, lines
