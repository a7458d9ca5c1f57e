"""Logging: secrets never reach a log line, exception text and stdlib loggers included."""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from syncd.log import Redactor, configure_logging, get_logger, redact, register_secret

PLATFORM_KEY = "platform-key-s3cr3t-0042"


@pytest.fixture
def json_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(secrets=[PLATFORM_KEY], json_output=True, stream=stream)
    yield stream
    logging.getLogger().handlers.clear()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_exception_message_containing_the_platform_key_is_redacted(
    json_stream: io.StringIO,
) -> None:
    password = "a-password-in-a-local"  # noqa: S105 - a local the traceback must not show
    register_secret(password)
    try:
        raise RuntimeError(f"request to https://x/vendor-api?key={PLATFORM_KEY} failed")
    except RuntimeError:
        get_logger("test").exception(
            "push failed", detail=f"key was {PLATFORM_KEY}", nested={"k": [PLATFORM_KEY]}
        )
    output = json_stream.getvalue()
    assert PLATFORM_KEY not in output
    assert password not in output
    (event,) = lines(json_stream)
    assert event["event"] == "push failed"
    assert event["detail"] == "key was ***"
    assert event["nested"] == {"k": ["***"]}
    assert "key=***" in json.dumps(event["exception"], ensure_ascii=False)
    # frames are rendered without local variables
    assert '"locals"' not in output


def test_stdlib_loggers_go_through_the_same_redaction(json_stream: io.StringIO) -> None:
    logging.getLogger("aiohttp.client").warning("retrying with key %s", PLATFORM_KEY)
    try:
        raise ValueError(PLATFORM_KEY)
    except ValueError:
        logging.getLogger("apscheduler.scheduler").error("job raised", exc_info=True)
    output = json_stream.getvalue()
    assert PLATFORM_KEY not in output
    assert [event["logger"] for event in lines(json_stream)] == [
        "aiohttp.client",
        "apscheduler.scheduler",
    ]


def test_session_ids_registered_at_run_time_are_redacted(json_stream: io.StringIO) -> None:
    session_id = "sess-9f8e7d6c5b4a"
    get_logger("cc").info("before", sid=session_id)
    register_secret(session_id)
    get_logger("cc").info("after", sid=session_id)
    before, after = lines(json_stream)
    assert before["sid"] == session_id
    assert after["sid"] == "***"


def test_redact_masks_longest_first_and_ignores_tiny_values() -> None:
    register_secret("abcdefgh-long-secret")
    register_secret("abcdefgh")
    register_secret("ab")  # too short to mask safely: would hide ordinary text
    assert redact("x abcdefgh-long-secret y abcdefgh z ab") == "x *** y *** z ab"


def test_console_output_on_a_terminal_style_stream() -> None:
    stream = io.StringIO()
    configure_logging(secrets=[PLATFORM_KEY], json_output=False, stream=stream)
    try:
        get_logger("t").warning("source failed", source="epaas", error=f"bad {PLATFORM_KEY}")
    finally:
        logging.getLogger().handlers.clear()
    text = stream.getvalue()
    assert "source failed" in text and "source=epaas" in text
    assert PLATFORM_KEY not in text
    assert not text.lstrip().startswith("{")


# --- bounded redaction -------------------------------------------------------------------------


def test_redactor_stays_bounded_and_keeps_recent_and_configured_tokens() -> None:
    redactor = Redactor()
    redactor.add(PLATFORM_KEY)  # configured, token-shaped: registered first, kept for good
    redactor.add("hunter2!pass")  # configured, not token-shaped
    first = secrets.token_hex(16)
    redactor.add(first)
    for _ in range(100_000):
        redactor.add(secrets.token_hex(16))
    latest = secrets.token_hex(16)
    redactor.add(latest)
    assert redactor.size <= 4096 + 256 + 1024
    text = f"sid={latest} key={PLATFORM_KEY} pw=hunter2!pass"
    assert redactor.redact(text) == "sid=*** key=*** pw=***"
    # An old session id fell out of the recent set, but named by its context it is still masked.
    assert redactor.redact(f'{{"session_id": "{first}"}}') == '{"session_id": "***"}'
    assert redactor.redact(f"Authorization: Basic {first}") == "Authorization: Basic ***"


def test_redactor_finds_tokens_between_url_escapes_and_overlapping_secrets() -> None:
    redactor = Redactor(pinned_tokens_max=0)
    token = secrets.token_hex(16)
    redactor.add(token)
    redactor.add("abcdefgh")
    cookie = f"%7B%22sid%22%3A%22{token}%22%7D"
    assert redactor.redact(cookie) == "%7B%22sid%22%3A%22***%22%7D"
    # a pinned secret inside a token, and a token inside a pinned secret, are masked whole
    redactor.add(f"abcdefgh{token}")
    assert redactor.redact(f"x abcdefgh{token} y") == "x *** y"
    redactor.add(f"pw {token} pw")
    assert redactor.redact(f"[pw {token} pw]") == "[***]"


def test_redaction_cost_does_not_grow_with_registrations() -> None:
    line = "classcharts getPupils answered 200 in 0.41 s pupils=3 next=2026-12-01T21:30:00"

    def cost(registrations: int) -> float:
        redactor = Redactor()
        for _ in range(registrations):
            redactor.add(secrets.token_hex(16))
        best = float("inf")
        for _ in range(3):  # best of three: machine noise must not decide
            start = time.perf_counter()
            for _ in range(2000):
                redactor.redact(line)
            best = min(best, time.perf_counter() - start)
        return best

    assert cost(100_000) < 3 * cost(300)


def test_unregistered_digests_and_ordinary_words_are_left_alone() -> None:
    redactor = Redactor()
    redactor.add(secrets.token_hex(16))
    digest = "9f86d081884c7d659a2feaa0c55ad015"
    text = f"fingerprint {digest} unchanged; Basic auth failed; access_token missing"
    assert redactor.redact(text) == text


# --- formats -----------------------------------------------------------------------------------


def _run_logging(env_extra: dict[str, str], code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NO_COLOR")}
    env.update(env_extra)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


JOURNAL_SCRIPT = f"""
import logging
from syncd.log import configure_logging, get_logger
configure_logging(secrets=["{PLATFORM_KEY}"], level="DEBUG")
log = get_logger("syncd.test")
log.warning("source failed key={PLATFORM_KEY}", source="epaas", error="bad key {PLATFORM_KEY}")
log.info("cycle done", users=3)
log.debug("detail")
logging.getLogger("aiohttp.client").error("stdlib error %s", "x")
try:
    raise RuntimeError("boom {PLATFORM_KEY}")
except RuntimeError:
    log.exception("push failed")
"""


def test_journal_format_under_systemd_prefixes_every_line_with_its_priority() -> None:
    out = _run_logging({"JOURNAL_STREAM": "8:12345"}, JOURNAL_SCRIPT)
    lines_ = out.splitlines()
    assert lines_[0].startswith("<4>source failed key=*** ")
    assert "source=epaas" in lines_[0] and 'error="bad key ***"' in lines_[0]
    assert lines_[1].startswith("<6>cycle done ") and "users=3" in lines_[1]
    assert lines_[2].startswith("<7>detail")
    assert lines_[3].startswith("<3>stdlib error x")
    traceback = lines_[4:]
    assert traceback[0].startswith("<3>push failed")
    assert len(traceback) > 2 and all(line.startswith("<3>") for line in traceback)
    assert "RuntimeError: boom ***" in out
    assert PLATFORM_KEY not in out
    assert "\x1b[" not in out
    assert "2026-" not in out and "timestamp" not in out  # journald stamps the time


def test_auto_format_is_json_when_not_a_terminal_and_not_under_systemd() -> None:
    out = _run_logging({}, JOURNAL_SCRIPT)
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["level"] == "warning" and events[0]["event"] == "source failed key=***"
    assert PLATFORM_KEY not in out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("no_color", "coloured"), [(None, True), ("1", False)])
def test_console_colour_on_a_terminal_unless_no_color(
    monkeypatch: pytest.MonkeyPatch, no_color: str | None, coloured: bool
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    stream = _Terminal()
    configure_logging(stream=stream)  # auto: a terminal means console
    try:
        get_logger("t").warning("source failed", source="epaas")
    finally:
        logging.getLogger().handlers.clear()
    text = stream.getvalue()
    assert "source failed" in text
    assert ("\x1b[" in text) is coloured


def test_explicit_format_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:1")
    stream = io.StringIO()
    configure_logging(stream=stream, fmt="json")
    try:
        get_logger("t").info("hello", session_id="abc-secret-value")
    finally:
        logging.getLogger().handlers.clear()
    (event,) = lines(stream)
    assert event["event"] == "hello" and event["session_id"] == "***"
    with pytest.raises(ValueError, match="unknown log format"):
        configure_logging(stream=stream, fmt="xml")
