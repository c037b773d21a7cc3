"""HTTP load with wrk: a Lua script per scenario, its figures read back as JSON.

wrk is C with LuaJIT: one thread of it drives tens of thousands of requests a
second, so the node, not the generator, sets the pace. The script's `done`
prints one `BENCH {...}` line: counts, errors, the requests sent (those sent
minus those answered were in flight when the run stopped) and the latency
distribution as quantiles. The CPU wrk used is read from the kernel when it
exits (wait4), exactly.
"""

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools.bench import BenchError, stats

MARK = "BENCH "

_DONE = """
threads = {}
sent = 0
function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end
local percents = {%(percents)s}
function done(summary, latency, requests)
  local total = 0
  for _, t in ipairs(threads) do total = total + (t:get("sent") or 0) end
  local parts = {}
  for _, p in ipairs(percents) do
    parts[#parts + 1] = string.format("[%%g,%%d]", p, latency:percentile(p))
  end
  parts[#parts + 1] = string.format("[100,%%d]", latency.max)
  local e = summary.errors
  io.write(string.format(
    '%(mark)s{"requests":%%d,"duration_us":%%d,"sent":%%d,"connect":%%d,"read":%%d,'
    .. '"write":%%d,"status":%%d,"timeout":%%d,"mean_us":%%.1f,"quantiles_us":[%%s]}\\n',
    summary.requests, summary.duration, total, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, table.concat(parts, ",")))
end
"""

_GET = """
wrk.headers["Authorization"] = "Bearer %(token)s"
"""

_ORDERS = """
local headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer %(token)s"}
local sku_count = %(sku_count)d
function init(args)
  math.randomseed(id * 104729 + os.time())
end
function request()
  sent = sent + 1
  local sku = "%(sku)s"
  if sku_count > 0 then sku = string.format("%(sku_format)s", math.random(0, sku_count - 1)) end
  headers["Idempotency-Key"] = "%(prefix)s-" .. id .. "-" .. sent
  return wrk.format("POST", "/orders", headers,
                    '{"items":[{"sku":"' .. sku .. '","quantity":1}]}')
end
"""


def done_script() -> str:
    percents = ",".join(f"{p:g}" for p in stats.CDF_PERCENTS if p < 100)
    return _DONE % {"percents": percents, "mark": MARK}


def get_script(token: str) -> str:
    return _GET % {"token": token} + done_script()


def orders_script(
    token: str, prefix: str, *, sku: str = "", sku_format: str = "", sku_count: int = 0
) -> str:
    """Orders of one unit: of `sku`, or of sku_format % random(0, sku_count - 1)."""
    values = {
        "token": token,
        "prefix": prefix,
        "sku": sku,
        "sku_format": sku_format,
        "sku_count": sku_count,
    }
    return _ORDERS % values + done_script()


@dataclass
class Result:
    requests: int  # answered
    duration: float  # seconds
    sent: int  # 0 when the script does not count them
    errors: dict[str, int]  # connect, read, write, status (non-2xx/3xx), timeout
    mean: float  # seconds
    quantiles: stats.Quantiles  # percent -> seconds
    cpu: float = 0.0  # seconds wrk used
    parts: int = 1

    @property
    def ok(self) -> int:
        return self.requests - self.errors.get("status", 0)

    @property
    def rate(self) -> float:
        return self.ok / self.duration if self.duration else 0.0

    @property
    def in_flight(self) -> int:
        """Sent but never answered: the run stopped first (or they timed out)."""
        return max(0, self.sent - self.requests)

    def latency(self, percent: float) -> float | None:
        return stats.at(self.quantiles, percent)


@dataclass
class Run:
    url: str
    script: str
    connections: int
    seconds: float
    extra: list[str] = field(default_factory=list)


def parse(output: str) -> Result:
    """The figures of one wrk run, from the line its script printed."""
    for line in output.splitlines():
        if line.startswith(MARK):
            data = json.loads(line[len(MARK) :])
            break
    else:
        raise BenchError(f"wrk printed no figures: {output.strip()[-500:]!r}")
    errors = {k: int(data[k]) for k in ("connect", "read", "write", "status", "timeout")}
    quantiles = [(float(p), v / 1e6) for p, v in data["quantiles_us"]]
    return Result(
        requests=int(data["requests"]),
        duration=data["duration_us"] / 1e6,
        sent=int(data["sent"]),
        errors=errors,
        mean=data["mean_us"] / 1e6,
        quantiles=quantiles,
    )


def combine(results: Sequence[Result]) -> Result:
    """Several wrk processes run side by side, as one."""
    errors = {k: sum(r.errors.get(k, 0) for r in results) for k in results[0].errors}
    requests = sum(r.requests for r in results)
    parts = [(r.requests, r.quantiles) for r in results]
    return Result(
        requests=requests,
        duration=max(r.duration for r in results),
        sent=sum(r.sent for r in results),
        errors=errors,
        mean=sum(r.mean * r.requests for r in results) / requests if requests else 0.0,
        quantiles=stats.merge(parts, [p for p, _ in results[0].quantiles]),
        cpu=sum(r.cpu for r in results),
        parts=len(results),
    )


def require() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BenchError("wrk is not installed: apt-get install wrk")
    return found


async def run_tool(command: list[str], within: float) -> tuple[int, str, float]:
    """Run a load generator to its end (killed past `within` seconds): its exit code, its
    output and the CPU seconds it used, as the kernel counted them."""
    with tempfile.TemporaryFile() as out:
        process = await asyncio.to_thread(
            subprocess.Popen, command, stdout=out, stderr=subprocess.STDOUT
        )
        waiting = asyncio.ensure_future(asyncio.to_thread(os.wait4, process.pid, 0))
        try:
            _, status, usage = await asyncio.wait_for(asyncio.shield(waiting), within)
        except (TimeoutError, asyncio.CancelledError):
            process.kill()
            await waiting
            process.returncode = -9
            raise
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        output = out.read().decode(errors="replace")
    return process.returncode, output, usage.ru_utime + usage.ru_stime


async def run(runs: Sequence[Run], folder: Path) -> Result:
    """Run the wrk processes side by side (each one thread); their figures combined."""
    binary = require()
    commands = []
    for index, spec in enumerate(runs):
        script = folder / f"wrk-{os.getpid()}-{index}.lua"
        script.write_text(spec.script)
        commands.append(
            [
                binary,
                "-t1",
                f"-c{spec.connections}",
                f"-d{spec.seconds:g}s",
                "--timeout",
                "10s",
                "-s",
                str(script),
                *spec.extra,
                spec.url,
            ]
        )
    within = max(spec.seconds for spec in runs) + 30.0
    finished = await asyncio.gather(*(run_tool(command, within) for command in commands))
    results = []
    for code, output, cpu in finished:
        if code != 0:
            raise BenchError(f"wrk exited with {code}: {output.strip()[-500:]}")
        result = parse(output)
        result.cpu = cpu
        results.append(result)
    return combine(results) if len(results) > 1 else results[0]
