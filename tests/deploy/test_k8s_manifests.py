"""The Kubernetes manifests (deploy/k8s): rendered by ``kubectl kustomize``, validated against the
Kubernetes JSON schemas offline (kubernetes-validate bundles them), and checked for what a user
relies on: probes, security context, graceful shutdown, autoscaling, disruption budget, settings.

No cluster runs here: these tests check the objects that ``kubectl apply -k`` would send.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import socket
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
VARIANTS = {"base": K8S / "base", "cpu": K8S / "overlays" / "cpu", "gpu": K8S / "overlays" / "gpu"}
CHECKPOINTS_SHELL = K8S / "tools" / "checkpoints-shell.yaml"  # applied by hand (docs/DEPLOY.md), not by kustomize
# The oldest Kubernetes the manifests are checked against (docs/DEPLOY.md, "Kubernetes"), and the newest
# whose schemas kubernetes-validate bundles
KUBERNETES_VERSIONS = ("1.25", latest_version())
MIN_KUSTOMIZE = 4  # `patches` and folders in `resources`; kubectl >= 1.24 embeds it and prints its version
# Settings that bound how long a request in flight at SIGTERM may still take (from its body's arrival:
# an upload still trickling in is bounded by none of them today)
SHUTDOWN_BOUND_SETTINGS = ("request_timeout_s",)

Manifest = dict[str, Any]


def _unavailable(reason: str) -> None:
    """CI must run these tests; elsewhere a missing tool skips them with the reason."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run installs it)")
    pytest.skip(reason)


@cache
def _kustomize_major() -> int | None:
    out = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True, check=False).stdout
    found = re.search(r"Kustomize Version: v(\d+)", out)
    return int(found.group(1)) if found else None


@cache
def _render(variant: str) -> tuple[Manifest, ...]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(VARIANTS[variant])], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"kubectl kustomize {VARIANTS[variant]} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@pytest.fixture(params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    """Each kustomization a user can apply (the base too, so that it stays valid on its own)."""
    if shutil.which("kubectl") is None:
        _unavailable("kubectl is not installed (kubectl >= 1.24 renders these kustomizations)")
    major = _kustomize_major()
    if major is None or major < MIN_KUSTOMIZE:
        _unavailable(f"kubectl's kustomize is older than v{MIN_KUSTOMIZE} (kubectl >= 1.24 needed)")
    return str(request.param)


@pytest.fixture
def objects(variant: str) -> tuple[Manifest, ...]:
    """The objects ``kubectl kustomize`` renders for the variant."""
    return _render(variant)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test."""

    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"network access during validation: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _one(objects: tuple[Manifest, ...], kind: str) -> Manifest:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _pod(objects: tuple[Manifest, ...]) -> Manifest:
    return _one(objects, "Deployment")["spec"]["template"]


def _api(objects: tuple[Manifest, ...]) -> Manifest:
    (container,) = (c for c in _pod(objects)["spec"]["containers"] if c["name"] == "api")
    return container


def _settings(objects: tuple[Manifest, ...]) -> dict[str, str]:
    return _one(objects, "ConfigMap")["data"]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def _schema_errors(objects: tuple[Manifest, ...], version: str) -> list[str]:
    """What Kubernetes ``version``'s schemas refuse in ``objects``, strictly: an unknown (say,
    misspelt) field is an error, as ``kubectl apply`` would make it."""
    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(map(str, exc.absolute_path))
            errors.append(f"{obj['kind']} {obj['metadata']['name']}: {exc.message} (at {where})")
    return errors


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_match_kubernetes_schemas(objects: tuple[Manifest, ...], version: str, offline: None) -> None:
    assert {obj["kind"] for obj in objects} == {
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "Service",
    }
    errors = _schema_errors(objects, version)
    assert not errors, f"invalid for Kubernetes {version}:\n" + "\n".join(errors)


def test_schema_check_refuses_our_deployment_with_a_misspelt_field(
    objects: tuple[Manifest, ...], offline: None
) -> None:
    deployment = copy.deepcopy(_one(objects, "Deployment"))
    (api,) = (c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "api")
    api["livenessprobe"] = api.pop("livenessProbe")
    (error,) = _schema_errors((deployment,), latest_version())
    assert error.startswith(f"Deployment {deployment['metadata']['name']}: ") and "livenessprobe" in error


def test_probes_point_at_health_routes_on_the_container_port(objects: tuple[Manifest, ...]) -> None:
    api = _api(objects)
    (port,) = api["ports"]
    expected = {"startupProbe": "/healthz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
    for probe, path in expected.items():
        get = api[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in (port["name"], port["containerPort"]), probe
    assert str(port["containerPort"]) == _settings(objects)["VIT_DIGITS_PORT"]


def _assert_restricted(pod: Manifest) -> None:
    """The image's non-root user, a read-only root, no privilege, no capability, the runtime's seccomp."""
    uid = re.search(r"useradd --uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert uid is not None
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid.group(1)), "the image's user"
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in pod.get("initContainers", []) + pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]


def test_pods_run_non_root_on_a_read_only_root(objects: tuple[Manifest, ...]) -> None:
    pod = _pod(objects)["spec"]
    _assert_restricted(pod)
    volumes = {v["name"]: v for v in pod["volumes"]}
    (tmp,) = (m for m in _api(objects)["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in volumes[tmp["name"]]


def test_grace_period_outlasts_pre_stop_and_requests_in_flight(objects: tuple[Manifest, ...]) -> None:
    pod = _pod(objects)["spec"]
    command = _api(objects)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pre_stop >= 3, "endpoint removal takes a few seconds to reach kube-proxy and load balancers"
    settings, defaults = _settings(objects), Settings.model_fields
    bound = sum(
        float(settings.get(f"VIT_DIGITS_{name.upper()}", defaults[name].default)) for name in SHUTDOWN_BOUND_SETTINGS
    )
    assert pod["terminationGracePeriodSeconds"] > pre_stop + bound


def test_autoscaler_targets_the_deployment_on_cpu(objects: tuple[Manifest, ...]) -> None:
    hpa, deployment = _one(objects, "HorizontalPodAutoscaler"), _one(objects, "Deployment")
    target, name = hpa["spec"]["scaleTargetRef"], deployment["metadata"]["name"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", name)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert "cpu" in _api(objects)["resources"]["requests"], "utilisation is measured against the request"
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_disruption_budget_and_service_select_the_pods(objects: tuple[Manifest, ...]) -> None:
    labels = _pod(objects)["metadata"]["labels"]
    pdb, service = _one(objects, "PodDisruptionBudget"), _one(objects, "Service")
    assert _selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert _selects(service["spec"]["selector"], labels)
    assert _selects(_one(objects, "Deployment")["spec"]["selector"]["matchLabels"], labels)
    (port,) = _api(objects)["ports"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port["name"]]


def test_config_map_holds_valid_settings(objects: tuple[Manifest, ...], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(objects)
    for key in settings:
        assert key.startswith("VIT_DIGITS_"), key
        assert key.removeprefix("VIT_DIGITS_").lower() in Settings.model_fields, f"{key} is no setting"
    for key in [k for k in os.environ if k.startswith("VIT_DIGITS_")]:
        monkeypatch.delenv(key)
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    parsed = Settings(_env_file=None)  # the values the app would read, or a ValidationError
    assert (parsed.workers, parsed.host) == (1, "0.0.0.0"), "one server process per container, on every interface"
    assert "VIT_DIGITS_API_KEY" not in settings, "a key belongs in a Secret"
    assert {"configMapRef": {"name": _one(objects, "ConfigMap")["metadata"]["name"]}} in _api(objects)["envFrom"]


def test_api_key_comes_from_an_optional_secret(objects: tuple[Manifest, ...]) -> None:
    (key,) = (e for e in _api(objects)["env"] if e["name"] == "VIT_DIGITS_API_KEY")
    assert key["valueFrom"]["secretKeyRef"]["optional"] is True, "no Secret: no key, not an empty one"


def test_checkpoints_come_from_the_volume_seeded_by_the_image(objects: tuple[Manifest, ...]) -> None:
    pod = _pod(objects)["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in _api(objects)["volumeMounts"]}
    (path,) = _settings(objects)["VIT_DIGITS_CHECKPOINTS"].split(",")
    claim = volumes[mounts[path]["name"]]["persistentVolumeClaim"]["claimName"]
    assert claim in {obj["metadata"]["name"] for obj in objects if obj["kind"] == "PersistentVolumeClaim"}
    (seed,) = pod["initContainers"]
    assert seed["image"] == _api(objects)["image"], "copies the checkpoints of the image that serves them"
    assert mounts[path]["name"] in {m["name"] for m in seed["volumeMounts"]}


def test_seeding_copies_shipped_checkpoints_without_overwriting(objects: tuple[Manifest, ...], tmp_path: Path) -> None:
    (seed,) = _pod(objects)["spec"]["initContainers"]
    assert seed["command"][:2] == ["sh", "-c"]
    (mount,) = seed["volumeMounts"]
    shipped, volume = tmp_path / "image", tmp_path / "volume"
    shipped.mkdir(), volume.mkdir()
    for name, data in {"vit-digits": b"shipped", "other": b"shipped too", "old": b"same"}.items():
        (shipped / f"{name}.safetensors").write_bytes(data)
        (shipped / f"{name}.onnx").write_bytes(data + b" (export)")
    (volume / "other.safetensors").write_bytes(b"put there by the user")
    (volume / "old.safetensors").write_bytes(b"same")  # a volume seeded before exports existed
    # the script, run here with the image's checkpoint folder and the volume's mount moved to tmp_path
    script = seed["command"][2].replace("/srv/checkpoints", str(shipped)).replace(mount["mountPath"], str(volume))
    for _ in range(2):  # a second pod start finds everything in place
        subprocess.run(["sh", "-c", script], check=True, capture_output=True)
    assert sorted(p.name for p in volume.iterdir()) == [
        "old.onnx",  # the unchanged shipped model gets its export
        "old.safetensors",
        "other.safetensors",  # the user's model gets no export of another model
        "vit-digits.onnx",
        "vit-digits.safetensors",
    ], "no leftovers"
    assert (volume / "vit-digits.safetensors").read_bytes() == b"shipped"
    assert (volume / "other.safetensors").read_bytes() == b"put there by the user"


def test_every_container_has_requests_and_a_memory_limit(objects: tuple[Manifest, ...]) -> None:
    pod = _pod(objects)["spec"]
    for container in pod["initContainers"] + pod["containers"]:
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys(), container["name"]
        assert "memory" in resources["limits"], container["name"]


def test_overlays_pick_the_device_and_image(objects: tuple[Manifest, ...], variant: str) -> None:
    api, device = _api(objects), _settings(objects)["VIT_DIGITS_DEVICE"]
    gpus = api["resources"]["limits"].get("nvidia.com/gpu")
    if variant == "gpu":
        assert (device, gpus, api["image"]) == ("cuda", 1, "vit-digits:cuda")
    else:
        assert (device, gpus, api["image"]) == ("cpu", None, "vit-digits:latest")


def test_checkpoints_shell_pod_mounts_the_claim_writable(offline: None) -> None:
    pod = yaml.safe_load(CHECKPOINTS_SHELL.read_text())
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)
    _assert_restricted(pod["spec"])
    claim = yaml.safe_load((VARIANTS["base"] / "checkpoints-pvc.yaml").read_text())["metadata"]["name"]
    service = yaml.safe_load((VARIANTS["base"] / "service.yaml").read_text())
    (volume,) = pod["spec"]["volumes"]
    (mount,) = pod["spec"]["containers"][0]["volumeMounts"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    assert mount["name"] == volume["name"] and not mount.get("readOnly", False)
    assert not _selects(service["spec"]["selector"], pod["metadata"]["labels"]), "no requests may come to it"
