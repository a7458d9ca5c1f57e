"""Chengjiyun's sign, checked against the PHP reference string computed independently here."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qsl

import pytest

from syncd.core.signing import API_WINDOW_S, SSO_WINDOW_S, sign, signed_query, verify

KEY = "platform-key"


def php(string: str) -> str:
    return hashlib.md5(string.encode("utf-8")).hexdigest()


@pytest.mark.parametrize(
    ("params", "string"),
    [
        (
            {"orgId": "testapi", "timestamp": 1700000000},
            "orgId=testapi&timestamp=1700000000&key=platform-key",
        ),
        (
            {"orgId": "testapi", "account": "zhiwei_01", "type": "高中", "timestamp": 1700000000},
            "account=zhiwei_01&orgId=testapi&timestamp=1700000000&type=高中&key=platform-key",
        ),
        (
            {"timestamp": "1", "role": "学生", "orgId": "s"},
            "orgId=s&role=学生&timestamp=1&key=platform-key",
        ),
        (
            {"orgId": "s", "examId": "233", "course": "语文", "timestamp": "5"},
            "course=语文&examId=233&orgId=s&timestamp=5&key=platform-key",
        ),
        ({"orgId": "a b", "timestamp": "1"}, "orgId=a b&timestamp=1&key=platform-key"),
    ],
)
def test_sign_matches_the_php_reference(params: dict[str, object], string: str) -> None:
    assert sign(params, KEY) == php(string)


def test_sign_ignores_its_own_sign_parameter_and_key_order() -> None:
    params = {"timestamp": "1", "orgId": "s"}
    assert sign({**params, "sign": "whatever"}, KEY) == sign(dict(reversed(params.items())), KEY)


def test_signed_query_encodes_on_the_wire_but_signs_raw_text() -> None:
    query = signed_query({"orgId": "s", "role": "学生", "timestamp": "10"}, KEY)
    assert "%E5%AD%A6%E7%94%9F" in query
    decoded = dict(parse_qsl(query))
    assert decoded["sign"] == php("orgId=s&role=学生&timestamp=10&key=platform-key")


def test_verify_window_and_mismatch() -> None:
    now = 1_800_000_000
    good = {"orgId": "s", "timestamp": str(now - 100)}
    good["sign"] = sign(good, KEY)
    assert verify(good, KEY, now=now) is None
    assert verify({**good, "sign": good["sign"].upper()}, KEY, now=now) is None
    old = {"orgId": "s", "timestamp": str(now - API_WINDOW_S - 1)}
    old["sign"] = sign(old, KEY)
    assert "window" in (verify(old, KEY, now=now) or "")
    assert verify(old, KEY, now=now, window_s=SSO_WINDOW_S) is None
    future = {"orgId": "s", "timestamp": str(now + API_WINDOW_S + 5)}
    future["sign"] = sign(future, KEY)
    assert verify(future, KEY, now=now) is not None
    assert verify({**good, "orgId": "t"}, KEY, now=now) == "sign does not match"
    assert verify({**good, "sign": ""}, KEY, now=now) == "sign does not match"
    assert verify({**good, "timestamp": "x"}, KEY, now=now) == "timestamp is not an integer"
    assert verify(good, "other-key", now=now) == "sign does not match"
