"""A missing optional extra is named, with the pip command that installs it."""

from __future__ import annotations

import sys

import pytest

from llava_bridge._extras import require_extra
from llava_bridge.cli.main import main


@pytest.mark.parametrize("module", ["no_such_module_xyz", "no_such_package_xyz.core"])
def test_a_missing_module_names_the_extra(module: str) -> None:
    with pytest.raises(ImportError, match=r'pip install -e "\.\[server\]"') as info:
        require_extra("server", module, what="llava-bridge serve")
    assert module in str(info.value) and info.value.name == module


def test_installed_modules_pass() -> None:
    require_extra("core", "json", "httpx", what="nothing")


def test_the_cli_reports_a_missing_extra_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "llava_bridge.server.cli", None)  # as if [server] were absent
    assert main(["serve", "--port", "0"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llava-bridge: error:")
