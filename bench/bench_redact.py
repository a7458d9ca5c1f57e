"""Per-line cost of secret redaction with 10 versus 100,000 registered secrets.

Every ClassCharts login and ping registers a fresh session id, so a long-running daemon registers
many; the cost per log line must stay flat. Five configured secrets are registered first, as the
config loader does, then run-time session ids (a sixth configured key is token-shaped).
Run: .venv/bin/python bench/bench_redact.py
"""

from __future__ import annotations

import secrets
import time

from syncd.log import Redactor

LINES = 20_000
REPEATS = 5  # best of, alternating the two cases, so machine noise does not decide
CONFIGURED = 5  # passwords, codes, keys from the config file


def build(registrations: int) -> tuple[Redactor, str]:
    redactor = Redactor()
    for n in range(CONFIGURED):
        redactor.add(f"configured-secret-{n:02d}!")
    redactor.add("platform-key-s3cr3t-0042")
    last = ""
    for _ in range(registrations - CONFIGURED - 1):
        last = secrets.token_hex(16)
        redactor.add(last)
    return redactor, last


def per_line_us(redactor: Redactor, token: str) -> float:
    line = (
        f"classcharts getPupils answered 200 in 0.41 s account=parent:it@school.example "
        f"pupils=3 sid={token} next_run=2026-12-01T21:30:00+00:00 key=configured-secret-03! platform=platform-key-s3cr3t-0042"
    )
    start = time.perf_counter()
    for _ in range(LINES):
        out = redactor.redact(line)
    elapsed = time.perf_counter() - start
    assert (
        "configured-secret-03!" not in out
        and "s3cr3t" not in out
        and (not token or token not in out)
    )
    return elapsed / LINES * 1e6


def main() -> None:
    cases = {}
    for registrations in (10, 100_000):
        start = time.perf_counter()
        cases[registrations] = build(registrations)
        build_s = time.perf_counter() - start
        print(f"{registrations:>7} registrations: registering took {build_s:.2f} s")
    best = {registrations: float("inf") for registrations in cases}
    for _ in range(REPEATS):
        for registrations, (redactor, token) in cases.items():
            best[registrations] = min(best[registrations], per_line_us(redactor, token))
    for registrations, (redactor, _) in cases.items():
        print(
            f"{registrations:>7} registrations: {best[registrations]:6.2f} us/line "
            f"(best of {REPEATS}), {redactor.size} values held"
        )


if __name__ == "__main__":
    main()
