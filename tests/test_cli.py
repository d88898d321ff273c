import subprocess
import sys

from plugin.cli import main


def test_no_command_is_a_usage_error():
    assert main([]) == 2


def test_console_entry_point_prints_help():
    out = subprocess.run([sys.executable, "-m", "plugin.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "borderphase" in out.stdout
