"""The KServe InferenceService (deploy/kserve): rendered by ``kubectl kustomize``, checked offline
against a trimmed schema of KServe's CRD (the properties it uses; Kubernetes' own types from the
schemas kubernetes-validate bundles), and for what a user relies on: the Open Inference Protocol
declared, probes on /v2's health routes, valid settings, a graceful shutdown, a restricted pod.

No cluster runs here: these tests check the object that ``kubectl apply -k deploy/kserve`` would send.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate.utils import latest_version, schema_contents
from referencing import Registry, Resource

from app.settings import Settings
from tests.deploy.test_k8s_manifests import MIN_KUSTOMIZE, _kustomize_major, _unavailable

ROOT = Path(__file__).resolve().parents[2]
KSERVE = ROOT / "deploy" / "kserve"
SCHEMA = Path(__file__).with_name("kserve_inferenceservice_v1beta1.schema.json")

Manifest = dict[str, Any]


@cache
def _render() -> Manifest:
    if _kustomize_major() is None or (_kustomize_major() or 0) < MIN_KUSTOMIZE:
        _unavailable(f"kubectl with kustomize v{MIN_KUSTOMIZE}+ is needed to render {KSERVE}")
    result = subprocess.run(["kubectl", "kustomize", str(KSERVE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"kubectl kustomize {KSERVE} failed:\n{result.stderr}"
    (service,) = (doc for doc in yaml.safe_load_all(result.stdout) if doc)
    return service


@pytest.fixture
def service() -> Manifest:
    return copy.deepcopy(_render())


def _container(service: Manifest) -> Manifest:
    (container,) = service["spec"]["predictor"]["containers"]
    return container


def _env(service: Manifest) -> dict[str, str]:
    return {e["name"]: e["value"] for e in _container(service)["env"] if "value" in e}


def _schema_errors(service: Manifest) -> list[str]:
    """What the trimmed CRD schema refuses in ``service``; Kubernetes' types checked strictly."""
    version = latest_version()
    definitions = schema_contents(f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)
    registry: Registry[Any] = Resource.from_contents(definitions) @ Registry()
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()), registry=registry)
    return [f"{e.message} (at {'/'.join(map(str, e.absolute_path))})" for e in validator.iter_errors(service)]


def test_inference_service_matches_the_crd_schema(service: Manifest) -> None:
    assert (service["apiVersion"], service["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert _schema_errors(service) == []


def test_schema_check_refuses_a_misspelt_field(service: Manifest) -> None:
    container = _container(service)
    container["readinessprobe"] = container.pop("readinessProbe")
    service["spec"]["predictor"]["minReplica"] = service["spec"]["predictor"].pop("minReplicas")
    errors = _schema_errors(service)
    assert len(errors) == 2 and any("readinessprobe" in e for e in errors) and any("minReplica" in e for e in errors)


def test_custom_container_speaks_the_open_inference_protocol(service: Manifest) -> None:
    container = _container(service)
    assert container["name"] == "kserve-container", "the container KServe runs as the predictor"
    assert _env(service)["PROTOCOL"] == "v2", "KServe's protocolVersion for a custom container"


def test_probes_point_at_v2_health_on_the_served_port(service: Manifest) -> None:
    container = _container(service)
    (port,) = container["ports"]
    expected = {
        "startupProbe": "/v2/health/live",
        "readinessProbe": "/v2/health/ready",
        "livenessProbe": "/v2/health/live",
    }
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in (port["name"], port["containerPort"]), probe
    assert str(port["containerPort"]) == _env(service)["VIT_DIGITS_PORT"]


def test_settings_are_valid_and_one_process_per_container(service: Manifest, monkeypatch: pytest.MonkeyPatch) -> None:
    env = _env(service)
    for key in [k for k in os.environ if k.startswith("VIT_DIGITS_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("VIT_DIGITS_"):
            assert key.removeprefix("VIT_DIGITS_").lower() in Settings.model_fields, f"{key} is no setting"
            monkeypatch.setenv(key, value)
    parsed = Settings(_env_file=None)
    assert (parsed.workers, parsed.host, parsed.device) == (1, "0.0.0.0", "cpu")
    (key,) = (e for e in _container(service)["env"] if e["name"] == "VIT_DIGITS_API_KEY")
    assert key["valueFrom"]["secretKeyRef"]["optional"] is True, "no Secret: no key, not an empty one"


def test_grace_period_outlasts_pre_stop_and_requests_in_flight(service: Manifest) -> None:
    predictor = service["spec"]["predictor"]
    command = _container(service)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    timeout = float(
        _env(service).get("VIT_DIGITS_REQUEST_TIMEOUT_S", Settings.model_fields["request_timeout_s"].default)
    )
    assert predictor["terminationGracePeriodSeconds"] > float(command[1]) + timeout


def test_pod_runs_non_root_on_a_read_only_root(service: Manifest) -> None:
    predictor, container = service["spec"]["predictor"], _container(service)
    uid = re.search(r"useradd --uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert uid is not None and predictor["securityContext"]["runAsUser"] == int(uid.group(1))
    assert predictor["securityContext"]["runAsNonRoot"] is True
    assert predictor["automountServiceAccountToken"] is False
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    (tmp,) = (m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in {v["name"]: v for v in predictor["volumes"]}[tmp["name"]]
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys() and "memory" in container["resources"][
        "limits"
    ]
