"""deploy/kubernetes/: offline checks of the manifests.

Every document parses; every resource validates against the Kubernetes 1.30
OpenAPI schemas in strict mode (unknown fields are errors) with the
``kubernetes-validate`` package (skipped if it is missing); and the rules the
manifests exist for hold: one Secret per role mounted only where needed, a
locked-down securityContext, resources, probes, a pinned image, writable
emptyDirs under a read-only root, PodDisruptionBudgets that select the pods, the
DaemonSet's pod template identical to the Deployment's, and a configuration
that etcron itself accepts.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler import __version__
from scheduler.config import load_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/kubernetes"
K8S_VERSION = "1.30"

MASTER_SECRETS = {"etcron-master-etcd", "etcron-api-token"}
WORKER_SECRETS = {"etcron-worker-etcd"}

Doc = dict[str, Any]


def _docs() -> list[tuple[str, Doc]]:
    out = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
            out.append((path.name, doc))
    return out


def _resources() -> list[tuple[str, Doc]]:
    return [(f, d) for f, d in _docs() if d["kind"] != "Kustomization"]


def _one(file: str, kind: str) -> Doc:
    [doc] = [d for f, d in _resources() if f == file and d["kind"] == kind]
    return doc


def _workloads() -> list[tuple[str, Doc]]:
    return [(f, d) for f, d in _resources() if d["kind"] in ("Deployment", "DaemonSet")]


def _role(doc: Doc) -> str:
    return str(doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"])


def test_every_document_has_kind_name_and_api_version() -> None:
    docs = _resources()
    assert {d["kind"] for _, d in docs} >= {
        "ConfigMap", "Deployment", "DaemonSet", "Service", "PodDisruptionBudget",
    }  # fmt: skip
    for file, doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), file
        assert doc.get("metadata", {}).get("name"), f"{file}: {doc['kind']} without a name"


def test_kustomization_lists_files_that_exist() -> None:
    [kust] = [d for f, d in _docs() if d["kind"] == "Kustomization"]
    for res in kust["resources"]:
        assert (K8S / res).is_file(), res
    assert "workers-daemonset.yaml" not in kust["resources"], "one worker workload, not both"
    [image] = kust["images"]
    assert image["newTag"] == __version__


def test_manifests_validate_against_the_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    for file, doc in _resources():
        try:
            kv.validate(doc, K8S_VERSION, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{file}: {doc['kind']} {doc['metadata']['name']}: {exc}")
    broken = copy.deepcopy(_one("workers.yaml", "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # a typo
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, K8S_VERSION, strict=True)


def test_each_role_mounts_only_its_own_secrets() -> None:
    for file, doc in _workloads():
        pod = doc["spec"]["template"]["spec"]
        mounted = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        for c in pod["containers"]:
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    mounted.add(ref["name"])
            for src in c.get("envFrom", []):
                assert "secretRef" not in src, f"{file}: whole Secret in the environment"
        want = MASTER_SECRETS if _role(doc) == "master" else WORKER_SECRETS
        assert mounted == want, f"{file}: {doc['kind']} mounts {sorted(mounted)}"
        for v in pod["volumes"]:
            if "secret" in v:
                assert v["secret"]["defaultMode"] & 0o007 == 0, f"{file}: world-readable secret"


def test_pods_run_locked_down() -> None:
    for file, doc in _workloads():
        pod = doc["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, file
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] != 0, file
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, file
        assert not pod.get("hostNetwork") and not pod.get("hostPID"), file
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, file
            assert sc["allowPrivilegeEscalation"] is False, file
            assert sc["readOnlyRootFilesystem"] is True, file
            assert sc["capabilities"] == {"drop": ["ALL"]}, file
            assert "privileged" not in sc, file
            res = c["resources"]
            assert res["requests"]["cpu"] and res["requests"]["memory"], file
            assert res["limits"]["memory"], file
            name, _, tag = c["image"].rpartition(":")
            assert name == "etcron" and tag == __version__, f"{file}: image {c['image']}"


def _paths(c: Doc, pod: Doc) -> dict[str, Doc]:
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}


def _env(c: Doc) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c["env"] if "value" in e}


def test_writable_paths_are_empty_dirs_and_secrets_are_read_only() -> None:
    config = yaml.safe_load(_one("config.yaml", "ConfigMap")["data"]["config.yaml"])
    for file, doc in _workloads():
        pod = doc["spec"]["template"]["spec"]
        [c] = pod["containers"]
        paths = _paths(c, pod)
        assert "emptyDir" in paths["/tmp"], file
        if _role(doc) == "worker":
            assert "emptyDir" in paths[config["worker"]["log_dir"]], file
            assert "emptyDir" in paths["/var/lib/etcron"], f"{file}: jobs' HOME"
        for m in c["volumeMounts"]:
            if "emptyDir" not in paths[m["mountPath"]]:
                assert m.get("readOnly") is True, f"{file}: {m['mountPath']} writable"
        for key in ("ETCRON_ETCD__PASSWORD_FILE", "ETCRON_ETCD__KEY_FILE", "ETCRON_ETCD__CA_FILE"):
            mount = str(Path(_env(c)[key]).parent)
            assert "secret" in paths[mount], f"{file}: {key} not in a mounted Secret"


def test_the_api_token_reaches_the_master_owner_only() -> None:
    # the master refuses a token file its group or others may read (mode & 0o077)
    pod = _one("masters.yaml", "Deployment")["spec"]["template"]["spec"]
    [init] = pod["initContainers"]
    [master] = pod["containers"]
    token = Path(_env(master)["ETCRON_MASTER__TOKEN_FILE"])
    run = _paths(master, pod)[str(token.parent)]
    assert run["emptyDir"]["medium"] == "Memory"
    assert init["command"][:3] == ["install", "-m", "0400"] and init["command"][-1] == str(token)
    secret = _paths(init, pod)[str(Path(init["command"][3]).parent)]
    assert secret["secret"]["secretName"] == "etcron-api-token"
    assert "etcron-api-token" not in {
        v["secret"]["secretName"]
        for m in master["volumeMounts"]
        if "secret" in (v := _paths(master, pod)[m["mountPath"]])
    }


def test_probes() -> None:
    master = _one("masters.yaml", "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert master["readinessProbe"]["httpGet"]["path"] == "/v1/health"
    assert master["livenessProbe"]["httpGet"]["path"] == "/metrics"
    for file in ("workers.yaml", "workers-daemonset.yaml"):
        [w] = [d for f, d in _workloads() if f == file]
        c = w["spec"]["template"]["spec"]["containers"][0]
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        port = c["readinessProbe"]["httpGet"]["port"]
        [p] = [p for p in c["ports"] if p["name"] == port]
        assert _env(c)["ETCRON_WORKER__LISTEN"].endswith(f":{p['containerPort']}")
        assert not _env(c)["ETCRON_WORKER__LISTEN"].startswith("127."), "probes need the pod IP"


def test_daemonset_runs_the_same_pod_as_the_deployment() -> None:
    dep = _one("workers.yaml", "Deployment")["spec"]
    ds = _one("workers-daemonset.yaml", "DaemonSet")["spec"]
    assert ds["template"] == dep["template"]
    assert ds["selector"] == dep["selector"]


def test_disruption_budgets_select_their_pods() -> None:
    for file, doc in _workloads():
        [pdb] = [d for f, d in _resources() if f == file and d["kind"] == "PodDisruptionBudget"]
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items(), file
    svc = _one("masters.yaml", "Service")
    master = _one("masters.yaml", "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= master.items()


def test_etcron_accepts_the_configuration_of_each_pod(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(_one("config.yaml", "ConfigMap")["data"]["config.yaml"])
    for file, doc in _workloads():
        c = doc["spec"]["template"]["spec"]["containers"][0]
        env = _env(c) | {"ETCRON_WORKER__ID": "pod-name"}
        assert env.pop("ETCRON_CONFIG") == "/etc/etcron/config/config.yaml"
        cfg = load_config(path, environ=env)  # unknown or malformed settings raise
        assert cfg.etcd.username == f"etcron-{_role(doc)}", file
        assert cfg.etcd.ca_file is not None and cfg.etcd.key_file is not None, file
