"""Dependencies by role: serving holds no torch, the image's lock pins every serving dependency with
hashes, and torch has one version across the Makefile, the Dockerfile and compose."""

import re
import tomllib

from packaging.requirements import Requirement

from tests.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = (ROOT / "requirements" / "serve.lock").read_text()
GPU_LOCK = (ROOT / "requirements" / "gpu.lock").read_text()


def _locked(lock: str = LOCK) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from a lock file (entries span continuation lines)."""
    entries = re.split(r"\n(?=[A-Za-z0-9])", lock)
    locked = {}
    for entry in entries:
        match = re.match(r"([A-Za-z0-9_.\-]+)==([^\s\\]+)", entry)
        if match:
            name = re.sub(r"[-_.]+", "-", match[1]).lower()
            locked[name] = (match[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", entry))
    return locked


def test_serving_dependencies_hold_no_torch():
    names = {Requirement(r).name for r in PYPROJECT["project"]["dependencies"]}
    assert not names & {"torch", "torchvision", "timm", "onnx", "safetensors"}
    assert "torch" in {Requirement(r).name for r in PYPROJECT["project"]["optional-dependencies"]["torch"]}


def test_lock_pins_every_serving_dependency_with_hashes():
    locked = _locked()
    assert "torch" not in locked and "onnx" not in locked
    for spec in PYPROJECT["project"]["dependencies"]:
        req = Requirement(spec)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in locked, f"{req.name} is not in requirements/serve.lock: run make lock"
        version, _ = locked[name]
        assert req.specifier.contains(version, prereleases=True), f"lock has {name}=={version}, pyproject {req}"
    assert all(hashes for _, hashes in locked.values()), "every locked package carries its hashes"


def test_torch_has_one_version_everywhere():
    pins = dict(
        line.split("==") for line in (ROOT / "requirements" / "torch.txt").read_text().splitlines() if "==" in line
    )
    assert set(pins) == {"torch", "torchvision"}
    for name in ("Makefile", "Dockerfile", "Dockerfile.gpu", "Dockerfile.train", "docker-compose.yml", ".ci/run"):
        text = (ROOT / name).read_text()
        assert not re.search(r"torch(vision)?==\d|TORCH(VISION)?_VERSION", text), f"{name} pins torch itself"
    assert "requirements/torch.txt" in (ROOT / "Makefile").read_text()
    for name in ("Dockerfile.gpu", "Dockerfile.train"):
        assert "requirements/torch.txt" in (ROOT / name).read_text()
    assert "torch" not in (ROOT / "requirements" / "serve.lock").read_text()


def test_gpu_lock_is_the_serving_lock_plus_torch_at_its_one_version():
    serve, gpu = _locked(), _locked(GPU_LOCK)
    for name, (version, _) in serve.items():
        assert gpu.get(name, (None,))[0] == version, f"{name}: serve.lock {version}, gpu.lock {gpu.get(name)}"
    torch_pin = next(
        line for line in (ROOT / "requirements" / "torch.txt").read_text().splitlines() if "torch==" in line
    )
    assert gpu["torch"][0] == torch_pin.split("==")[1]
    assert all(hashes for _, hashes in gpu.values())
    assert "gpu.lock" in (ROOT / "Dockerfile.gpu").read_text()
