"""Configuration: every bad-config case is one clear message naming the key, exit 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, subprocess_env, syncd_command
from syncd.config import Secret, load_config, masked, parse_config
from syncd.exceptions import ConfigError

EXAMPLE = REPO / "config" / "syncd.example.toml"
EXAMPLE_SECRETS = {
    "SYNCD_CHENGJIYUN_KEY": "platform-key-0123456789",
    "SYNCD_CC_PARENT_PASSWORD": "parent-password-xyz",
    "SYNCD_CC_STUDENT_CODE": "ABCD1234",
    "SYNCD_CC_STUDENT_DOB": "01/09/2011",
    "SYNCD_EPAAS_SUITE_SECRET": "suite-secret-abc",
    "SYNCD_EPAAS_SUITE_TICKET": "suite-ticket-def",
    "SYNCD_EPAAS_PERMANENT_CODE": "permanent-code-ghi",
}

MINIMAL = """
[chengjiyun]
platform = "p1"
key = "literal-key-1"
org_id = "school-1"
"""


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        syncd_command(*args),
        capture_output=True,
        text=True,
        env=subprocess_env(**env),
        timeout=60,
        check=False,
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "syncd.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_example_config_with_secrets_from_environment_prints_masked(tmp_path: Path) -> None:
    result = run_cli("--config", str(EXAMPLE), "check-config", **EXAMPLE_SECRETS)
    assert result.returncode == 0, result.stderr
    for secret in EXAMPLE_SECRETS.values():
        assert secret not in result.stdout
        assert secret not in result.stderr
    shown = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert shown["chengjiyun"]["key"] == "***"
    assert shown["chengjiyun"]["platform"] == "your-platform-id"
    assert shown["classcharts"]["parents"][0] == {"email": "parent@example.org", "password": "***"}
    assert shown["epaas"]["permanent_code"] == "***"
    assert "enabled sources: classcharts, epaas" in result.stdout


def test_config_path_from_environment_variable(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    result = run_cli("check-config", SYNCD_CONFIG=str(path))
    assert result.returncode == 0, result.stderr
    assert "enabled sources: none" in result.stdout


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        pytest.param(None, {}, "does not exist; pass --config PATH", id="missing-file"),
        pytest.param("[chengjiyun\nplatform = 1", {}, "is not valid TOML", id="toml-syntax"),
        pytest.param(
            MINIMAL + "colour = 'blue'\n",
            {},
            "chengjiyun.colour: is not a known key",
            id="unknown-key",
        ),
        pytest.param(
            MINIMAL + "[surprise]\n", {}, "surprise: is not a known key", id="unknown-section"
        ),
        pytest.param(
            MINIMAL + "batch_size = 'lots'\n",
            {},
            "chengjiyun.batch_size: Input should be a valid integer",
            id="wrong-type",
        ),
        pytest.param(
            MINIMAL + "batch_size = 0\n",
            {},
            "chengjiyun.batch_size: Input should be greater than or equal to 1",
            id="out-of-range",
        ),
        pytest.param(
            "[chengjiyun]\nplatform = 'p'\nkey = 'k1234'\n",
            {},
            "chengjiyun.org_id: is required",
            id="missing-key",
        ),
        pytest.param(
            MINIMAL.replace('"literal-key-1"', '"env:SYNCD_TEST_UNSET"'),
            {},
            "chengjiyun.key: environment variable SYNCD_TEST_UNSET is not set",
            id="unset-env",
        ),
        pytest.param(
            MINIMAL.replace('"literal-key-1"', '"file:/nonexistent/key"'),
            {},
            "chengjiyun.key: file /nonexistent/key does not exist",
            id="missing-secret-file",
        ),
        pytest.param(
            MINIMAL.replace('"literal-key-1"', '"credential:cjy-key"'),
            {},
            "chengjiyun.key: credential cjy-key needs $CREDENTIALS_DIRECTORY",
            id="credential-outside-systemd",
        ),
        pytest.param(
            MINIMAL
            + "[classcharts]\n[[classcharts.students]]\ncode = 'AB12'\ndob = '2011-09-01'\n",
            {},
            "classcharts.students[0].dob: must be a date written DD/MM/YYYY",
            id="bad-dob",
        ),
        pytest.param(
            MINIMAL + "[schedule]\nepaas = '0 3 * * 9'\n",
            {},
            "schedule.epaas: weekday '9' is not 0-7",
            id="bad-crontab",
        ),
        pytest.param(
            MINIMAL + "[server]\nlisten = '8087'\n",
            {},
            'server.listen: must be "HOST:PORT"',
            id="bad-listen",
        ),
        pytest.param(
            MINIMAL + "[classcharts]\nid_prefix = 'cc-'\n",
            {},
            "classcharts: has no [[classcharts.parents]]",
            id="no-accounts",
        ),
    ],
)
def test_bad_config_is_one_clear_message_and_exit_2(
    tmp_path: Path, text: str | None, env: dict[str, str], expected: str
) -> None:
    path = tmp_path / "absent.toml" if text is None else write(tmp_path, text)
    result = run_cli("--config", str(path), "check-config", **env)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "\nrequests_per_second = = 3\n")
    with pytest.raises(ConfigError, match=r"at line 7, column 23"):
        load_config(path)


def test_secret_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "key.txt").write_text("from-a-file-123\n", encoding="utf-8")
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "epaas-secret").write_text("from-credential-456", encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    monkeypatch.setenv("SYNCD_TEST_PERMANENT", "from-env-789")
    config = parse_config(
        {
            "chengjiyun": {"platform": "p", "key": f"file:{tmp_path / 'key.txt'}", "org_id": "o"},
            "epaas": {
                "suite_id": "s",
                "suite_secret": "credential:epaas-secret",
                "suite_ticket": "literal-ticket",
                "auth_corpid": "c",
                "permanent_code": "env:SYNCD_TEST_PERMANENT",
            },
        }
    )
    assert config.chengjiyun.key.reveal() == "from-a-file-123"
    assert config.epaas is not None
    assert config.epaas.suite_secret.reveal() == "from-credential-456"
    assert config.epaas.permanent_code.reveal() == "from-env-789"
    assert config.epaas.suite_ticket.reveal() == "literal-ticket"
    assert "from-env-789" not in repr(config)
    assert "from-env-789" not in json.dumps(masked(config))


def test_secret_never_shows_in_repr_or_str() -> None:
    secret = Secret("hunter2-hunter2")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert f"{secret}" == "Secret('***')"


def test_defaults_and_sections() -> None:
    config = parse_config({"chengjiyun": {"platform": "p", "key": "k1234", "org_id": "o"}})
    assert config.enabled_sources == []
    assert config.safety.delete_after_cycles == 2
    assert config.server.port == 8087
    assert str(config.store.path) == "/var/lib/syncd/syncd.db"
    assert config.chengjiyun.base_url == "https://chengjiyun.com"


def test_check_config_reports_every_problem_at_once(tmp_path: Path) -> None:
    result = run_cli("--config", str(EXAMPLE), "check-config")  # no secret in the environment
    assert result.returncode == 2
    problems = [line for line in result.stdout.splitlines() if "environment variable" in line]
    assert len(problems) == len(EXAMPLE_SECRETS), result.stdout
    for name in EXAMPLE_SECRETS:
        assert name in result.stdout
    assert f"{len(problems)} problem(s)" in result.stdout
    assert "more problem(s): `syncd check-config` lists them all" in result.stderr
