from pathlib import Path

import pytest

from cognopt_ray.config import DEFAULT_SERVICES, Settings, check_service_name
from cognopt_ray.errors import ConfigError
from cognopt_ray.priority import Priority


def test_defaults_hold_the_spec_pools(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Settings.load(environ={})
    assert s.storage_root == str(tmp_path / ".cognopt")
    assert s.redis_url is None
    pools = {
        n: (s.service(n).memory.pool_size, s.service(n).memory.block_size)
        for n in ("ai_models", "code_generation", "voice_processing", "payment_processing")
    }
    assert pools == {
        "ai_models": (10, 1024 * 1024),
        "code_generation": (20, 512 * 1024),
        "voice_processing": (15, 256 * 1024),
        "payment_processing": (5, 64 * 1024),
    }
    assert set(DEFAULT_SERVICES) <= set(s.services)
    # any other valid name works and gets the defaults
    assert s.service("my_new_service") == s.default_service


def test_environment_overrides_nested_and_json():
    env = {
        "COGNOPT_MAX_BODY_BYTES": "2048",
        "COGNOPT_REDIS_URL": "redis://127.0.0.1:6390/1",
        "COGNOPT_SERVICES__AI_MODELS__MEMORY__POOL_SIZE": "20",
        "COGNOPT_SERVICES": '{"fraud_check": {"cpu": {"max_workers": 3}}}',
        "UNRELATED": "x",
    }
    s = Settings.load(environ=env)
    assert s.max_body_bytes == 2048
    assert s.redis_url == "redis://127.0.0.1:6390/1"
    assert s.service("fraud_check").cpu.max_workers == 3
    # a service given as JSON merges with the defaults instead of replacing them
    assert "ai_models" in s.services


def test_yaml_file_then_env_then_overrides(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_body_bytes: 100\nhttp_port: 9001\nservices:\n  ai_models:\n    memory: {pool_size: 3}\n")
    s = Settings.load(cfg, environ={"COGNOPT_HTTP_PORT": "9002"})
    assert (s.max_body_bytes, s.http_port, s.service("ai_models").memory.pool_size) == (100, 9002, 3)
    assert s.service("ai_models").memory.block_size == 1024 * 1024  # merged, not replaced
    s2 = Settings.load(environ={"COGNOPT_CONFIG": str(cfg)}, http_port=9100)
    assert (s2.max_body_bytes, s2.http_port) == (100, 9100)


@pytest.mark.parametrize(
    "env, must_contain",
    [
        ({"COGNOPT_MAX_BODY_BYTES": "-1"}, ["max_body_bytes", "COGNOPT_MAX_BODY_BYTES", "greater than or equal to 1"]),
        ({"COGNOPT_MAX_BODY_BYTES": "lots"}, ["max_body_bytes", "valid integer"]),
        ({"COGNOPT_NO_SUCH_SETTING": "1"}, ["no_such_setting", "unknown setting", "storage_root"]),
        (
            {"COGNOPT_SERVICES__AI_MODELS__STORAGE__DEFAULT_TIER": "lukewarm"},
            ["default_tier", "'hot', 'warm', 'cold' or 'archive'"],
        ),
        ({"COGNOPT_SERVICES__AI_MODELS__CPU__PRIORITY_THRESHOLD": "urgent"}, ["priority_threshold", "critical"]),
        ({"COGNOPT_REDIS_URL": "http://x"}, ["redis_url", "redis://"]),
        ({"COGNOPT_ENCRYPTION_KEY": "c2hvcnQ="}, ["encryption_key", "32 bytes"]),
        ({"COGNOPT_ADMIN_KEY": "short"}, ["admin_key", "16 characters"]),
        ({"COGNOPT_SERVICES": '{"Bad-Name": {}}'}, ["services", "a-z"]),
        ({"COGNOPT_SERVICES": "{not json"}, ["services", "JSON"]),
        ({"COGNOPT_HTTP_PORT": "70000"}, ["http_port", "65535"]),
    ],
)
def test_bad_settings_name_the_setting_and_the_allowed_values(env, must_contain):
    with pytest.raises(ConfigError) as exc:
        Settings.load(environ=env)
    text = str(exc.value)
    for piece in must_contain:
        assert piece in text, (piece, text)


def test_secrets_are_not_echoed_in_errors():
    with pytest.raises(ConfigError) as exc:
        Settings.load(environ={"COGNOPT_ADMIN_KEY": "tiny-secret"})
    assert "tiny-secret" not in str(exc.value)


def test_missing_and_invalid_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(tmp_path / "nope.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        Settings.load(bad, environ={})


def test_service_names():
    assert check_service_name("ai_models") == "ai_models"
    for bad in ["", "A", "1abc", "a-b", "../x", "a" * 64, "x\x00"]:
        with pytest.raises(ValueError):
            check_service_name(bad)


def test_priority_parse():
    assert Priority.parse("critical") is Priority.CRITICAL
    assert Priority.parse(5) is Priority.BACKGROUND
    assert Priority.parse("2") is Priority.HIGH
    for bad in [0, 6, "urgent", True, None, 1.5]:
        with pytest.raises(ValueError, match="1..5"):
            Priority.parse(bad)


def test_storage_root_uri_kept(tmp_path):
    s = Settings.load(environ={}, storage_root="s3://bucket/prefix")
    assert s.storage_root == "s3://bucket/prefix"
    assert isinstance(s.root, Path)


def test_cpu_tasks_setting_checks_names_and_paths_and_imports():
    from cognopt_ray.cpu import configured
    from cognopt_ray.examples.tasks import count_primes

    s = Settings.load(environ={"COGNOPT_CPU__TASKS": '{"primes": "cognopt_ray.examples.tasks:count_primes"}'})
    assert configured.resolve(s) == {"primes": count_primes}
    assert count_primes(100) == 25 and count_primes(2) == 0
    for tasks, says in (
        ({"1bad": "math:factorial"}, "task name '1bad'"),
        ({"ok": "math.factorial"}, "is not 'package.module:function'"),
        ({"ok": "math:factorial; rm"}, "is not 'package.module:function'"),
    ):
        with pytest.raises(ConfigError, match=says):
            Settings.load(environ={}, cpu={"tasks": tasks})
    with pytest.raises(ConfigError, match=r"cpu.tasks.pi: 'math:pi' is a float, not a function"):
        configured.resolve(Settings.load(environ={}, cpu={"tasks": {"pi": "math:pi"}}))
    with pytest.raises(ValueError):
        count_primes(10**9)
