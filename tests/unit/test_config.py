import pytest

from scheduler.config import Config, load_config, parse_config
from scheduler.errors import ConfigError


def test_defaults_and_full_file(tmp_path):
    assert load_config(None) == Config()
    path = tmp_path / "phalanx.yaml"
    path.write_text("""
schedulerName: phalanx-b
topology: {levels: [topology.kubernetes.io/zone, rack]}
accelerators: [nvidia.com/gpu]
solver: {timeLimitSeconds: 0.5, algorithm: greedy}
binder: {concurrency: 16}
http: {address: "[::1]:9000", secureAddress: 0.0.0.0:9443, tlsCertFile: /tls/tls.crt,
       tlsPrivateKeyFile: /tls/tls.key}
leaderElection: {enabled: true, namespace: ops, leaseDurationSeconds: 20}
""")
    config = load_config(path)
    assert config.scheduler_name == "phalanx-b"
    assert config.preset.keys == ("topology.kubernetes.io/zone", "rack")
    assert config.solver_time_limit_s == 0.5 and config.algorithm == "greedy"
    assert config.bind_concurrency == 16 and config.http_address == "[::1]:9000"
    assert config.secure_address == "0.0.0.0:9443"
    assert (config.tls_cert_file, config.tls_key_file) == ("/tls/tls.crt", "/tls/tls.key")
    assert config.leader_election.enabled and config.leader_election.namespace == "ops"


@pytest.mark.parametrize(("raw", "field"), [
    ({"schedulerNme": "x"}, "config.schedulerNme"),
    ({"topology": {"preset": "azure"}}, "topology.preset"),
    ({"topology": {"preset": "aws", "levels": ["a"]}}, "topology"),
    ({"topology": {"levels": "rack"}}, "topology.levels"),
    ({"topology": {"levels": ["a", "a"]}}, "topology.levels"),
    ({"solver": {"timeLimitSeconds": 0}}, "solver.timeLimitSeconds"),
    ({"solver": {"timeLimitSeconds": "1s"}}, "solver.timeLimitSeconds"),
    ({"solver": {"algorithm": "milp"}}, "solver.algorithm"),
    ({"binder": {"concurrency": 0}}, "binder.concurrency"),
    ({"binder": {"concurrency": True}}, "binder.concurrency"),
    ({"http": {"address": "localhost"}}, "http.address"),
    # Plain HTTP serves every gang to whoever connects: loopback only.
    ({"http": {"address": "0.0.0.0:10270"}}, "http.address"),
    ({"http": {"address": "10.0.0.7:10270"}}, "http.address"),
    ({"http": {"secureAddress": "nowhere"}}, "http.secureAddress"),
    ({"http": {"tlsCertFile": "/tls/tls.crt"}}, "http.tlsPrivateKeyFile"),
    ({"http": {"tlsPrivateKeyFile": "/tls/tls.key"}}, "http.tlsCertFile"),
    ({"leaderElection": {"enabled": "yes"}}, "leaderElection.enabled"),
    ({"leaderElection": {"leaseDurationSeconds": 5, "renewDeadlineSeconds": 10}},
     "leaderElection.renewDeadlineSeconds"),
    ({"leaderElection": {"renewDeadlineSeconds": 3, "retryPeriodSeconds": 3}},
     "leaderElection.retryPeriodSeconds"),
    ({"accelerators": "nvidia.com/gpu"}, "accelerators"),
    (["not", "a", "mapping"], "config"),
])
def test_bad_values_name_the_field(raw, field):
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert caught.value.field == field
    assert field in str(caught.value)


def test_unreadable_or_invalid_file(tmp_path):
    with pytest.raises(ConfigError, match="readable"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("solver: [unclosed")
    with pytest.raises(ConfigError, match="valid YAML"):
        load_config(bad)


def test_run_bad_config_exits_1_naming_the_field(tmp_path, capsys):
    from scheduler.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("binder: {concurrency: -1}\n")
    assert main(["run", "--config", str(path)]) == 1
    assert "binder.concurrency" in capsys.readouterr().err
