"""What deploys the platform, checked offline: cluster.yaml, the Dockerfile, the KubeRay RayJob.

    .venv/bin/python -m pytest tests/test_deploy.py

Nothing here starts a cluster or builds an image (that needs a cloud account and a registry);
what is checked is what would make them fail: Ray's own config validation, the images matching
the project's Ray and Python, the install steps matching pyproject.toml, the token reaching every
node, and the job's entrypoint being a command the CLI accepts.
"""

from __future__ import annotations

import copy
import re
import shlex
import sys
import tomllib

import ray
import yaml
from helpers import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
RAY_TAG = f"{ray.__version__}-py{sys.version_info.major}{sys.version_info.minor}"
DOCKERFILE = (REPO / "Dockerfile").read_text()


def pinned(name: str) -> str:
    return next(d for d in PROJECT["dependencies"] if re.match(rf"{name}\b", d) and "[" not in d.split("==")[0]).replace(" ", "")


def torch_pins() -> list[str]:
    return [pinned("torch"), pinned("torchvision")]


def test_the_projects_ray_and_python_are_what_the_images_hold():
    assert f">={ray.__version__}" in next(d for d in PROJECT["dependencies"] if d.startswith("ray["))
    assert PROJECT["requires-python"] == f">={sys.version_info.major}.{sys.version_info.minor}"


def test_cluster_yaml_passes_rays_validation_and_runs_the_projects_images():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(copy.deepcopy(config)))
    docker = config["docker"]
    assert docker["head_image"] == f"rayproject/ray:{RAY_TAG}-cpu"
    assert docker["worker_image"] == f"rayproject/ray:{RAY_TAG}-gpu"
    for name, node_type in config["available_node_types"].items():
        # No ImageId means Ray's default Deep Learning AMI (Ubuntu 18.04), too old for the pinned CUDA build.
        assert node_type["node_config"].get("ImageId", "").startswith(("ami-", "resolve:ssm:")), name
    assert config["setup_commands"][0].split()[-2:] == torch_pins()
    assert any("pip install" in c and "-e ~/rayplatform" in c for c in config["setup_commands"])


def test_every_cluster_node_checks_the_same_token():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all(c.startswith("RAY_AUTH_MODE=token ") for c in starts), key


def test_the_dockerfile_installs_the_project_as_the_project_says():
    base = re.search(r"^ARG BASE=(\S+)$", DOCKERFILE, re.M).group(1)
    assert base == f"rayproject/ray:{RAY_TAG}-cpu"
    assert f"BASE=rayproject/ray:{RAY_TAG}-gpu" in DOCKERFILE  # the documented GPU build
    runs = re.findall(r"^RUN (.+)$", DOCKERFILE, re.M)
    assert runs[0].split()[-2:] == torch_pins() and runs[-1] == "pip install --no-cache-dir -e ."
    copied = {line.split()[-1].rstrip("/") for line in re.findall(r"^COPY .+$", DOCKERFILE, re.M)}
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {p.rstrip("*") for p in packages} <= copied and "pyproject.toml" in DOCKERFILE
    workdir = re.search(r"^WORKDIR (\S+)$", DOCKERFILE, re.M).group(1)
    assert re.search(rf"^ENV PYTHONPATH={workdir}$", DOCKERFILE, re.M)


def test_the_rayjob_runs_the_projects_image_and_a_command_the_cli_accepts(capsys):
    from rayplatform import cli

    job = yaml.safe_load((REPO / "deploy" / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    containers = [
        cluster["headGroupSpec"]["template"]["spec"]["containers"][0],
        *(group["template"]["spec"]["containers"][0] for group in cluster["workerGroupSpecs"]),
    ]
    version = PROJECT["version"]
    assert [c["image"] for c in containers] == [f"rayplatform:{version}", f"rayplatform:{version}-gpu"]
    assert all(f"-t {c['image']} ." in DOCKERFILE for c in containers)  # the tags the Dockerfile builds
    for container in containers:
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
    command = shlex.split(job["spec"]["entrypoint"])
    assert command[:2] == ["rayplatform", "run"]
    assert cli.main([*command[1:], "--print-config"]) == 0
    assert "epochs:" in capsys.readouterr().out
