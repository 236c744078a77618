"""The ``vit-digits`` command line against a live server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test starts a server process


def _vit_digits(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vit_digits_client", *args], capture_output=True, text=True, timeout=120, env=env or None
    )


@pytest.fixture
def files(digits: list[bytes], tmp_path: Path) -> list[Path]:
    paths = []
    for i, data in enumerate([*digits[:5], b"not a picture"]):
        path = tmp_path / f"{i}.png"
        path.write_bytes(data)
        paths.append(path)
    return paths


def test_predict_prints_a_table_in_order_and_fails_for_a_bad_file(server: str, files: list[Path]) -> None:
    done = _vit_digits("predict", "--url", server, *map(str, files))
    assert done.returncode == 1, done.stderr  # one file got an error of its own
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["file", "digit", "confidence", "is_digit", "digit_score", "error"]
    assert [row.split()[0] for row in rows] == [str(f) for f in files]
    assert "unsupported_format" in rows[-1] and rows[0].split()[3] in ("yes", "no")
    assert done.stderr == ""  # no progress bar: not a terminal, and few files


def test_predict_json_and_models(server: str, files: list[Path]) -> None:
    done = _vit_digits("predict", "--json", "--url", server, *map(str, files[:2]))
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert [a["file"] for a in answers] == [str(f) for f in files[:2]]
    assert set(answers[0]["prediction"]) >= {"digit", "confidence", "is_digit", "digit_score", "probabilities"}
    listed = _vit_digits("models", "--json", "--url", server)
    assert [m["id"] for m in json.loads(listed.stdout)] == ["tiny"]
    table = _vit_digits("models", "--url", server)
    assert table.stdout.splitlines()[1].split()[:3] == ["tiny", "yes", "onnxruntime"]


def test_server_from_the_environment_and_progress_when_asked(server: str, files: list[Path]) -> None:
    done = _vit_digits(
        "predict", "--progress", "always", *map(str, files[:3]), **{**os.environ, "VIT_DIGITS_URL": server}
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.endswith("\n") and "3/3 pictures" in done.stderr


def test_unreachable_server_and_missing_file_exit_2(files: list[Path]) -> None:
    missing = _vit_digits("predict", "--url", "http://127.0.0.1:9", "nowhere.png")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    down = _vit_digits("models", "--url", "http://127.0.0.1:9", "--timeout", "0.5")
    assert down.returncode == 2 and "cannot reach the server" in down.stderr
