"""The sandbox for end-to-end tests: three fakes on 127.0.0.1 and a config pointing at them."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from conftest import subprocess_env, syncd_command
from syncd.sandbox.chengjiyun import FakeChengjiyun
from syncd.sandbox.classcharts import FakeClassCharts
from syncd.sandbox.epaas import FakeEpaas
from syncd.sandbox.school import School, generate_school, populate, write_config

TODAY = dt.date.today()


@dataclass
class Sandbox:
    school: School
    classcharts: FakeClassCharts
    epaas: FakeEpaas
    chengjiyun: FakeChengjiyun
    urls: list[str]
    directory: Path

    @property
    def database(self) -> Path:
        return self.directory / "syncd.db"

    def config(
        self,
        *,
        safety: str = "",
        batch_size: int = 100,
        name: str = "syncd.toml",
        chengjiyun: str = "",
        epaas: str = "",
        key: str | None = None,
        **kwargs: object,
    ) -> Path:
        """A config for the sandbox; ``chengjiyun``/``epaas``: extra lines for those sections,
        ``key``: a different [chengjiyun] key (a wrong one, say)."""
        path = write_config(
            self.directory / name,
            school=self.school,
            database=self.database,
            classcharts_url=self.urls[0],
            epaas_url=self.urls[1],
            chengjiyun=self.chengjiyun,
            chengjiyun_url=self.urls[2],
            extra=f"[safety]\n{safety}\n" if safety else "",
            **kwargs,  # type: ignore[arg-type]
        )
        text = path.read_text(encoding="utf-8").replace(
            "batch_size = 100", f"batch_size = {batch_size}\n{chengjiyun}"
        )
        text = text.replace('permanent_code = "', f'{epaas}\npermanent_code = "')
        if key is not None:
            text = text.replace(f'key = "{self.chengjiyun.key}"', f'key = "{key}"')
        path.write_text(text, encoding="utf-8")
        return path

    def expected_user_ids(self) -> set[str]:
        """What Chengjiyun should hold: pupils, parent accounts, teachers of every class."""
        pupils = {f"cc-{pid}" for pid in self.classcharts.pupils}
        parents = {f"cc-parent-{p.id}" for p in self.classcharts.parents.values()}
        teachers = {
            f"ep-{userid}" for klass in self.epaas.classes.values() for userid in klass.teachers
        }
        return pupils | parents | teachers


async def start_sandbox(
    directory: Path,
    pupils: int = 30,
    *,
    org_id: str = "sandbox-school",
    key: str = "sandbox-key",
    seed: int = 7,
) -> Sandbox:
    """One school's three fakes; ``org_id``, ``key`` and ``seed`` tell schools apart."""
    school = generate_school(pupils, seed=seed, today=TODAY)
    classcharts, epaas = FakeClassCharts(), FakeEpaas()
    chengjiyun = FakeChengjiyun(org_id=org_id, key=key)
    populate(school, classcharts, epaas)
    urls = [await fake.start() for fake in (classcharts, epaas, chengjiyun)]
    return Sandbox(school, classcharts, epaas, chengjiyun, urls, directory)


async def stop_sandbox(sandbox: Sandbox) -> None:
    for fake in (sandbox.classcharts, sandbox.epaas, sandbox.chengjiyun):
        await fake.stop()


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


async def run_syncd(config: Path | None, *args: str, timeout_s: float = 60.0) -> Result:
    """The real CLI in a subprocess, awaited so the fakes in this event loop keep answering."""
    argv = syncd_command(*(["--config", str(config)] if config else []), *args)
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=subprocess_env()
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=timeout_s)
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())
