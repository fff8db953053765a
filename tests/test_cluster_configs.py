"""The cluster and schedule configs users copy: valid against Ray's own schema where Ray has
one, and carrying the fields that make spot work (checked here, since no cloud is at hand)."""

import json
from pathlib import Path

import jsonschema
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"


def test_launcher_config_is_valid_for_ray_and_has_spot_fallback_and_idle_timeout():
    config = yaml.safe_load((CLUSTER / "launcher" / "aws-spot-gpu.yaml").read_text())
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    types = config["available_node_types"]
    spot, fallback = types["gpu_spot"], types["gpu_on_demand"]
    assert spot["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    assert "InstanceMarketOptions" not in fallback["node_config"]
    assert spot["priority"] > fallback["priority"]
    assert spot["resources"]["spot"] >= 1 and spot["min_workers"] == 0
    assert spot["labels"]["spotbatch.io/market"] == "spot"
    assert config["idle_timeout_minutes"] > 0 and types["head"]["resources"] == {}


def test_kuberay_cluster_selects_spot_nodes_and_marks_them():
    cluster = yaml.safe_load((CLUSTER / "kuberay" / "raycluster.yaml").read_text())
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    (group,) = cluster["spec"]["workerGroupSpecs"]
    assert group["minReplicas"] == 0
    pod = group["template"]["spec"]
    assert pod["nodeSelector"]["karpenter.sh/capacity-type"] == "spot"
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["RAY_NODE_MARKET_TYPE"] == "spot"
    assert json.loads(json.loads(group["rayStartParams"]["resources"])) == {"spot": 1}


def test_nightly_cronjob_creates_that_nights_rayjob():
    configmap, cronjob = yaml.safe_load_all((CLUSTER / "kuberay" / "nightly.yaml").read_text())
    assert cronjob["kind"] == "CronJob" and cronjob["spec"]["schedule"] == "0 2 * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert "date -u +%F" in cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][0]
    rayjob = yaml.safe_load(configmap["data"]["rayjob.yaml"])
    assert (rayjob["apiVersion"], rayjob["kind"]) == ("ray.io/v1", "RayJob")
    assert rayjob["metadata"]["name"].endswith("__DATE__")
    assert rayjob["spec"]["entrypoint"] == "python -m jobs.run /specs/nightly.yaml --date __DATE__"
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True and rayjob["spec"]["backoffLimit"] > 0


def test_cron_line_runs_spotbatch_nightly_in_utc():
    lines = [line for line in (CLUSTER / "nightly.crontab").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines[0] == "CRON_TZ=UTC"
    minute, hour, dom, month, dow, *command = lines[1].split()
    assert (minute, hour, dom, month, dow) == ("0", "2", "*", "*", "*")
    assert "spotbatch run" in " ".join(command)
