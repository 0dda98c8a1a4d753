"""The ``serve run`` config file of docs/scaling.md builds the deployment it describes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("ray.serve")

import yaml  # type: ignore[import-untyped]  # noqa: E402
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary  # noqa: E402

from baco_integrations.server import ray_app  # noqa: E402

DOC = Path(__file__).parents[2] / "docs" / "scaling.md"


def documented_config() -> dict:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    (block,) = [b for b in blocks if "import_path:" in b]
    return yaml.safe_load(block)


def test_documented_config_builds_the_deployment() -> None:
    (app,) = documented_config()["applications"]
    module, name = app["import_path"].split(":")
    builder = getattr(__import__(module, fromlist=[name]), name)
    assert builder is ray_app.build
    application = call_user_app_builder_with_args_if_necessary(builder, app["args"])  # type: ignore[arg-type]
    deployment = application._bound_deployment
    assert deployment.max_ongoing_requests == app["args"]["limits"]["max_live_rows"]
    assert (deployment.ray_actor_options or {})["num_gpus"] == 1
    autoscaling = deployment._deployment_config.autoscaling_config
    assert autoscaling is not None
    assert autoscaling.max_replicas == 4 and autoscaling.target_ongoing_requests == 64


def test_resources_per_replica() -> None:
    cpu = ray_app.RayServeArgs(base="b", aligned="a")
    assert cpu.gpus() == 0 and cpu.ongoing() == cpu.limits.max_live_rows
    sharded = ray_app.RayServeArgs(base="b", aligned="a", device_map="auto", num_gpus=2)
    assert sharded.gpus() == 2
    assert ray_app.RayServeArgs(base="b", aligned="a", device="cuda").gpus() == 1
    with pytest.raises(ValueError):
        ray_app.RayServeArgs.model_validate({"base": "b", "aligned": "a", "replicas": 2})
