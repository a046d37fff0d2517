import json
import subprocess
import sys

from scheduler.cli import main


def test_synth_writes_nodelist_and_podlist(tmp_path, capsysbinary):
    pods = tmp_path / "pods.json"
    assert main(["synth", "--nodes", "64", "--occupancy", "0.5", "--seed", "3",
                 "--pods-out", str(pods)]) == 0
    nodes = json.loads(capsysbinary.readouterr().out)
    assert nodes["kind"] == "NodeList" and len(nodes["items"]) == 64
    load = json.loads(pods.read_text())
    assert load["kind"] == "PodList" and load["items"]
    names = {n["metadata"]["name"] for n in nodes["items"]}
    assert all(p["spec"]["nodeName"] in names for p in load["items"])


def test_synth_is_deterministic_and_p6_has_four_layers(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    for out in (first, second):
        assert main(["synth", "--nodes", "40", "--preset", "p6", "--seed", "9",
                     "--out", str(out)]) == 0
    assert first.read_bytes() == second.read_bytes()
    labels = json.loads(first.read_text())["items"][0]["metadata"]["labels"]
    assert "topology.k8s.aws/network-node-layer-4" in labels


def test_synth_bad_values_exit_1_naming_the_field():
    done = subprocess.run([sys.executable, "-m", "scheduler.cli", "synth", "--nodes", "10",
                           "--occupancy", "2"], capture_output=True, text=True)
    assert done.returncode == 1 and "occupancy" in done.stderr
    done = subprocess.run([sys.executable, "-m", "scheduler.cli", "synth", "--nodes", "10",
                           "--fanout", "8,x"], capture_output=True, text=True)
    assert done.returncode == 2 and "fanout" in done.stderr
    done = subprocess.run([sys.executable, "-m", "scheduler.cli", "synth", "--nodes", "10",
                           "--fanout", "8,16"], capture_output=True, text=True)
    assert done.returncode == 1 and "fanout" in done.stderr
