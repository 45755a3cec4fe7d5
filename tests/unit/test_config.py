"""Configuration: defaults, the YAML file, environment overrides, errors naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from scheduler.config import Config, ConfigError, load_config
from workers.output_sink import run_output_limit

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.yaml"


def test_defaults_without_file_or_env() -> None:
    cfg = load_config(None, environ={})
    assert cfg.etcd.endpoints == ["127.0.0.1:2379"]
    assert cfg.etcd.prefix == "/cron"
    assert cfg.master.listen == "127.0.0.1:8070"
    assert cfg.master.token is None
    assert cfg.log.format == "auto"


def test_file_then_env_override(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "etcd:\n  endpoints: [10.0.0.1:2379]\n  request_timeout: 2s\n"
        "master:\n  token: from-file\n  keep_for: 1d\n"
        "worker:\n  labels: {zone: a}\n  output_limit: 2MiB\n"
    )
    cfg = load_config(path, environ={})
    assert cfg.etcd.endpoints == ["10.0.0.1:2379"]
    assert cfg.etcd.request_timeout == 2.0
    assert cfg.master.keep_for == 86400.0
    assert cfg.worker.output_limit == 2 * 1024 * 1024

    env = {
        "ETCRON_ETCD__ENDPOINTS": "10.0.0.2:2379, 10.0.0.3:2379",
        "ETCRON_MASTER__TOKEN": "from-env",
        "ETCRON_WORKER__LABELS": "zone=b,disk=ssd",
        "ETCRON_LOG__LEVEL": "debug",
        "UNRELATED": "x",
    }
    cfg = load_config(path, environ=env)
    assert cfg.etcd.endpoints == ["10.0.0.2:2379", "10.0.0.3:2379"]
    assert cfg.etcd.request_timeout == 2.0  # the file's value stays
    assert cfg.master.resolved_token() == "from-env"
    assert cfg.worker.labels == {"zone": "b", "disk": "ssd"}
    assert cfg.log.level == "debug"


def test_config_path_from_env(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("master:\n  listen: 0.0.0.0:9000\n")
    cfg = load_config(None, environ={"ETCRON_CONFIG": str(path)})
    assert cfg.master.listen == "0.0.0.0:9000"


def test_token_file_wins(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("  file-token\n")
    cfg = load_config(
        None,
        environ={"ETCRON_MASTER__TOKEN": "x", "ETCRON_MASTER__TOKEN_FILE": str(tmp_path / "tok")},
    )
    assert cfg.master.resolved_token() == "file-token"


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("master:\n  tokne: oops\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "master.tokne" in str(info.value) and str(path) in str(info.value)


def test_unknown_section_and_env_key_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="wrker"):
        load_config(None, environ={"ETCRON_WRKER__CAPACITY": "3"})
    with pytest.raises(ConfigError, match=r"worker\.capcity"):
        load_config(None, environ={"ETCRON_WORKER__CAPCITY": "3"})


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("etcd:\n  request_timeout: soon\n", "etcd.request_timeout"),
        ("log:\n  level: loud\n", "log.level"),
        ("- a\n- b\n", "mapping"),
        ("etcd: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(path, environ={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml", environ={})


def _sections(text: str) -> dict[str, str]:
    """Top-level section name -> its text (comments included)."""
    parts = re.split(r"^(\w+):\s*$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_example_config_documents_every_setting_and_loads() -> None:
    text = EXAMPLE.read_text()
    blocks = _sections(text)
    for section, field in Config.model_fields.items():
        block = blocks[section]
        sub = field.annotation
        assert sub is not None and hasattr(sub, "model_fields")
        for key in sub.model_fields:
            assert f"  {key}:" in block or f"# {key}:" in block, f"{section}.{key} not documented"
    assert "ETCRON_<SECTION>__<SETTING>" in text
    assert isinstance(yaml.safe_load(text), dict)
    cfg = load_config(EXAMPLE, environ={})
    assert cfg.model_dump(exclude={"worker": {"id"}}) == Config().model_dump(
        exclude={"worker": {"id"}}
    )


def test_limits_settings() -> None:
    cfg = load_config(
        environ={
            "ETCRON_MASTER__MAX_SPEC_BYTES": "128KiB",
            "ETCRON_WORKER__MAX_OUTPUT_LIMIT": "4MiB",
        }
    )
    assert (cfg.master.max_spec_bytes, cfg.worker.max_output_limit) == (128 * 1024, 4 * 1024**2)
    assert Config().master.max_spec_bytes == 64 * 1024
    assert Config().worker.max_output_limit == 16 * 1024**2
    with pytest.raises(ConfigError, match=r"master\.max_spec_bytes"):
        load_config(environ={"ETCRON_MASTER__MAX_SPEC_BYTES": "2MiB"})  # etcd refuses > 1.5 MiB
    with pytest.raises(ConfigError, match=r"worker\.max_output_limit"):
        load_config(environ={"ETCRON_WORKER__MAX_OUTPUT_LIMIT": "0"})


@pytest.mark.parametrize(
    ("job", "default", "most", "limit"),
    [
        (None, 1024, 4096, 1024),  # the worker default
        (2048, 1024, 4096, 2048),  # the job's own
        (100 * 1024**3, 1024, 4096, 4096),  # a job stored before the 16 MiB limit: capped
        (None, 8192, 4096, 4096),  # a worker default above the cap: capped too
    ],
)
def test_run_output_limit_is_capped_by_the_worker(
    job: int | None, default: int, most: int, limit: int
) -> None:
    assert run_output_limit(job, default, most) == limit
