"""scripts/install.py passes pip's configuration on to uv (real pip reads a real file)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("install", ROOT / "scripts" / "install.py")
install = importlib.util.module_from_spec(spec)
spec.loader.exec_module(install)


def test_pip_settings_reach_uv(tmp_path, monkeypatch):
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nindex-url = https://mirror.example/simple\n"
                      "extra-index-url =\n    file:///a/simple\n    file:///b/simple\n"
                      "find-links = /file/wheels\ntimeout = 5\n"
                      "[install]\nconstraint = /c/constraints.txt\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)  # this machine's own, which would win
    monkeypatch.setenv("PIP_FIND_LINKS", "/env/wheels")  # the environment wins, as in pip
    settings = install.pip_settings(sys.executable)
    assert settings["index-url"] == ["https://mirror.example/simple"]
    assert settings["extra-index-url"] == ["file:///a/simple", "file:///b/simple"]
    assert settings["find-links"] == ["/env/wheels"]
    assert settings["constraint"] == ["/c/constraints.txt"]
    arguments = install.uv_arguments(settings)
    assert arguments[:2] == ["--index-strategy", "unsafe-best-match"]
    pairs = list(zip(arguments[2::2], arguments[3::2], strict=True))
    assert ("--extra-index-url", "file:///b/simple") in pairs
    assert ("--find-links", "/env/wheels") in pairs
    assert ("--index-url", "https://mirror.example/simple") in pairs
    assert "timeout" not in " ".join(arguments)
