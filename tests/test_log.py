"""Logging: secrets never reach a log line, exception text and stdlib loggers included."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from syncd.log import configure_logging, get_logger, redact, register_secret

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
