"""Importing the package, or running ``detect``, imports none of torch, transformers or lmdeploy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "lmdeploy")

PROBE = """
import json, sys
{body}
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})))
"""


def run_probe(body: str) -> subprocess.CompletedProcess[str]:
    code = PROBE.format(body=body, heavy=HEAVY)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def loaded_after(body: str) -> list[str]:
    result = run_probe(body)
    assert result.returncode == 0, result.stderr
    modules: list[str] = json.loads(result.stdout.splitlines()[-1])
    return modules


@pytest.mark.parametrize(
    "body",
    [
        "import pytest_lmbackend",
        "import pytest_lmbackend.config, pytest_lmbackend.rules, pytest_lmbackend.lmdeploy_api",
        "from pytest_lmbackend.rules import detect\n"
        "for release in ('0.4.0', '0.7.3', '0.18.0'):\n"
        "    detect('fixtures/models/qwen2-vl', lmdeploy=release)",
        "from pytest_lmbackend.__main__ import main\n"
        "main(['detect', '--lmdeploy', 'all', '--json', 'fixtures/models/llava-hf-qwen2-head64'])",
    ],
    ids=["package", "modules", "detect", "cli"],
)
def test_no_heavy_imports(body: str) -> None:
    assert loaded_after(body) == []


def test_probe_would_notice_a_heavy_import() -> None:
    # The check above can fail: importing a stand-in named like a heavy package is reported.
    fake = "import sys, types\nsys.modules['torch'] = types.ModuleType('torch')"
    assert loaded_after(fake) == ["torch"]


def test_default_release_reads_metadata_without_importing(tmp_path: Path) -> None:
    # A fake installed lmdeploy (metadata only, no package) decides the default release.
    dist = tmp_path / "lmdeploy-0.10.1.dist-info"
    dist.mkdir()
    metadata = "Metadata-Version: 2.1\nName: lmdeploy\nVersion: 0.10.1\n"
    (dist / "METADATA").write_text(metadata, encoding="utf-8")
    body = (
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from pytest_lmbackend.rules import default_release\n"
        "assert default_release() == '0.10.1', default_release()"
    )
    assert loaded_after(body) == []
