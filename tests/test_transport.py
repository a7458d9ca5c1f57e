"""The shared HTTP policy, directly: which failures are transient, how errors read."""

from __future__ import annotations

import aiohttp
import pytest
from pydantic import BaseModel, ValidationError

from syncd.clients.transport import (
    DEFAULT_MAX_RESPONSE_BYTES,
    classify_failure,
    describe_size_limit,
    describe_validation_error,
    parse_json,
)
from syncd.exceptions import PayloadError


@pytest.mark.parametrize(
    ("outcome", "transient"),
    [
        (500, True),
        (502, True),
        (503, True),
        (429, True),
        (400, False),
        (401, False),
        (403, False),
        (404, False),
        (TimeoutError(), True),
        (aiohttp.ClientConnectionError(), True),
        (aiohttp.ServerDisconnectedError(), True),
    ],
)
def test_transient_or_permanent(outcome: int | Exception, transient: bool) -> None:
    failure = classify_failure(outcome)  # type: ignore[arg-type]
    assert failure is not None and failure.transient is transient


@pytest.mark.parametrize("status", [200, 204, 302])
def test_success_and_redirects_are_not_failures(status: int) -> None:
    assert classify_failure(status) is None


def test_timeout_names_the_limit() -> None:
    failure = classify_failure(TimeoutError(), timeout_s=2.5)
    assert failure is not None and failure.reason == "no answer within 2.5 s (timeout)"


def test_size_limit_message_names_bytes_and_mib() -> None:
    assert DEFAULT_MAX_RESPONSE_BYTES == 67108864
    assert describe_size_limit(DEFAULT_MAX_RESPONSE_BYTES) == (
        "answer is larger than the limit of 67108864 bytes (64 MiB, max_response_bytes)"
    )


def test_parse_json_keeps_the_cause() -> None:
    with pytest.raises(PayloadError, match="nested too deep") as deep:
        parse_json("epaas", "class/list", b"[" * 100_000 + b"]" * 100_000)
    assert isinstance(deep.value.__cause__, RecursionError)
    with pytest.raises(PayloadError, match="not JSON") as broken:
        parse_json("epaas", "class/list", b"<html>")
    assert isinstance(broken.value.__cause__, ValueError)


class _Model(BaseModel):
    id: int
    name: str


def test_validation_errors_read_short_and_without_input() -> None:
    with pytest.raises(ValidationError) as caught:
        _Model.model_validate({"id": "secret-value", "name": 5})
    message = describe_validation_error(caught.value)
    assert message.startswith("id: ") and message.endswith("(and 1 more)")
    assert "secret-value" not in message
    with pytest.raises(ValidationError) as whole:
        _Model.model_validate("nope")
    assert describe_validation_error(whole.value, where="record").startswith("record: ")
