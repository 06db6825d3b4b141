"""cluster/ and infra/ are code too: they parse, name scripts that exist, and stay locked down."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import sar2opt

REPO = Path(__file__).resolve().parents[2]
CLUSTER_FILES = sorted((REPO / "cluster").glob("*.yaml"))
LAUNCHERS = [p for p in CLUSTER_FILES if p.name.startswith("ray-cluster-")]
KUBE = [p for p in CLUSTER_FILES if p.name.startswith("kuberay-")]


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _walk(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def test_there_are_launcher_and_kuberay_definitions():
    assert {p.name for p in LAUNCHERS} >= {"ray-cluster-aws.yaml", "ray-cluster-gcp.yaml"}
    kinds = {d["kind"] for p in KUBE for d in _docs(p)}
    assert {"RayCluster", "RayJob"} <= kinds


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_every_cluster_file_parses_and_names_existing_scripts(path):
    docs = _docs(path)
    assert docs
    scripts = set(re.findall(r"\bjobs/[\w/]+\.py\b", path.read_text()))
    for s in scripts:
        assert (REPO / s).is_file(), f"{path.name} names {s}, which is not in the repository"


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_images_match_the_package_version(path):
    images = [v for k, v in _walk(_docs(path)) if k == "image" and isinstance(v, str)]
    ours = [i for i in images if "sar2opt/sar2opt" in i]
    for image in ours:
        tag = image.rsplit(":", 1)[1]
        assert tag.split("-")[0] == sar2opt.__version__, image


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launchers_turn_token_auth_on_and_keep_dashboard_local(path):
    (cfg,) = _docs(path)
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type"):
        assert key in cfg
    assert cfg["head_node_type"] in cfg["available_node_types"]
    head = " ".join(cfg["head_start_ray_commands"])
    workers = " ".join(cfg["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in workers
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in head
    assert any("auth_token" in k for k in cfg.get("file_mounts", {}))


@pytest.mark.parametrize("path", KUBE, ids=lambda p: p.name)
def test_kuberay_clusters_use_token_auth_and_internal_services(path):
    for doc in _docs(path):
        assert doc["apiVersion"].startswith("ray.io/")
        spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
        assert spec["authOptions"]["mode"] == "token"
        assert spec["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
        assert spec["rayVersion"] == _ray_version()
        if doc["kind"] == "RayJob":
            assert doc["spec"]["entrypoint"].startswith("python jobs/")
            assert doc["spec"]["shutdownAfterJobFinishes"] is True


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_every_ray_version_named_is_the_locked_one(path):
    """rayVersion fields, also in comments (the CronJob's template), name the locked Ray."""
    named = re.findall(r"rayVersion:\s*\"?([\d.]+)", path.read_text())
    assert all(v == _ray_version() for v in named), (named, _ray_version())


SECRET_PATTERNS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key id
    re.compile(r"(?i)(secret|password|subscription[_-]?key)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{16,}"),
]


@pytest.mark.parametrize(
    "path",
    CLUSTER_FILES
    + sorted((REPO / "infra").rglob("*.tf"))
    + [REPO / "infra" / "Dockerfile"]
    + sorted((REPO / "jobs" / "configs").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_no_credentials_in_configs(path):
    text = path.read_text()
    for pat in SECRET_PATTERNS:
        assert not pat.search(text), f"{path} looks like it holds a credential"


def test_dockerfile_installs_like_make_setup():
    """The image installs the lock with hashes, then torch of the Makefile's release (CPU and
    GPU variants), then the package without resolving anything else."""
    text = (REPO / "infra" / "Dockerfile").read_text()
    torch = re.search(r"^TORCH\s*:?=\s*(\S+)", (REPO / "Makefile").read_text(), re.M).group(1)
    assert text.count(f"torch=={torch} ") == 2  # CPU and GPU variants, same release
    assert re.search(r"COPY [^\n]*requirements\.lock", text)
    assert re.search(r"pip install --require-hashes [^\n]*-r requirements\.lock", text)
    assert re.search(r"pip install --no-deps [^\n]*\"?\.(\[[\w,-]+\])?\"?", text)
    assert re.search(r"^USER (?!root)", text, re.M), "the image must not run as root"


def test_terraform_module_declares_bucket_lifecycle_and_gpu_pool():
    import hcl2  # a dev dependency: without it this test fails, it never skips

    tf = {}
    for f in sorted((REPO / "infra" / "terraform").glob("*.tf")):
        with open(f) as fh:
            for k, v in hcl2.load(fh).items():
                if not k.startswith("__"):
                    tf.setdefault(k, []).extend(v if isinstance(v, list) else [v])
    resources = {name.strip('"'): body for r in tf["resource"] for name, body in r.items()}
    bucket = next(iter(resources["google_storage_bucket"].values()))
    assert bucket["public_access_prevention"].strip('"') == "enforced"
    actions = [a["type"].strip('"') for rule in bucket["lifecycle_rule"] for a in rule["action"]]
    assert "Delete" in actions and "SetStorageClass" in actions
    pool = next(iter(resources["google_container_node_pool"].values()))
    node = pool["node_config"][0]
    assert node["spot"] is True and node["guest_accelerator"][0]["count"] == 1
    declared = {name for v in tf["variable"] for name in v}
    used = set(re.findall(r"var\.(\w+)", (REPO / "infra" / "terraform" / "main.tf").read_text()))
    assert used <= {d.strip('"') for d in declared}, used - declared


def _ray_version() -> str:
    """Ray's version in requirements.lock: what `make setup` and the image install, on every
    platform and Python (one version, not one per marker)."""
    text = (REPO / "requirements.lock").read_text()
    versions = set(re.findall(r"^ray==([^\s;\\]+)", text, re.M))
    assert len(versions) == 1, f"requirements.lock pins Ray {versions or 'nowhere'}"
    return versions.pop()


def test_cluster_ray_version_is_the_installed_one():
    """The suite runs on the locked Ray, so what it proves holds on the clusters' Ray."""
    from importlib.metadata import version

    assert version("ray") == _ray_version(), "the venv is not the lock's: run `make setup`"
