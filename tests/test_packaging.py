"""The shipped dreams travel with a non-editable install."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_carries_shipped_checkpoints(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("learned_envs-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(p.name for p in (ROOT / "checkpoints").glob("*.safetensors"))
    assert shipped, "no shipped checkpoints in checkpoints/"
    for name in shipped:
        assert f"learned_envs/checkpoints/{name}" in names
    assert "learned_envs/cli.py" in names and not any(n.startswith("tests/") for n in names)
