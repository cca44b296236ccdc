"""Instructions per request of the real servers, gateway and forwarder side by side, counted by valgrind.

`bench/run.py`'s CPU-time ratios move by 10-40 % from one run to the next on these shared 2-core machines;
`bench/instructions.py` is deterministic but counts the gateway's own code only (in process: no HTTP server, no
upstream client). This counts whole servers: the gateway (`python -m app serve`) and the forwarder
(`bench/baseline.py`) each run under valgrind's callgrind, one a core, against the fake upstream; a warm-up, then
the counters are zeroed, `--requests` requests are sent (loadgen.py, `--concurrency`), and the counters dumped.
The process's idle work (timers: the key cache, the store's checkpoints, the access log's flush) is then counted
over `--idle` seconds without requests and taken off at that rate: under valgrind a request lasts ~50 times
longer, so timers would weigh ~50 times more than they do at full speed.

    .venv/bin/python bench/server_instructions.py                       # chat, non-streamed
    .venv/bin/python bench/server_instructions.py --stream              # chat streamed (100 chunks)
    .venv/bin/python bench/server_instructions.py --responses --stream  # POST /v1/responses, streamed
    .venv/bin/python bench/server_instructions.py --native              # the native route
    .venv/bin/python bench/server_instructions.py --team                # bench/team.py's team cell (key, limits, usage)

Instructions are not time: shared code (uvicorn, aiohttp) runs at a lower instructions-per-cycle than the
gateway's own, so these ratios come out higher than the CPU-time ratios; they say whether a change removed work,
and where a cell stands, without the host's noise. At concurrency 1 (the default) a request's reads and writes are
never shared with another's; under valgrind the servers are slow, so a higher `--concurrency` batches more than at
full speed. Needs `valgrind` (Debian: `apt-get install valgrind`); takes a few minutes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402  (bench/ on the path: its process helpers)
import team  # noqa: E402


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=None, help="requests counted (default 600; streams 200)")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--idle", type=float, default=15.0, help="seconds of idle work counted after the requests")
    ap.add_argument("--stream", action="store_true", help="streamed requests (the fake upstream's 100 chunks)")
    kind = ap.add_mutually_exclusive_group()
    kind.add_argument("--responses", action="store_true", help="POST /v1/responses instead of chat")
    kind.add_argument("--native", action="store_true", help="POST /v1beta/models/...:generateContent (passed through)")
    kind.add_argument("--team", action="store_true", help="the team cell's gateway: a limited key, usage records")
    ap.add_argument("--python", default=sys.executable)
    return ap.parse_args()


def totals(out_dir: Path, part: int) -> int:
    """Instructions of dump `part` of every callgrind output file (one per process) in `out_dir`."""
    count = 0
    for path in out_dir.glob(f"cg.*.{part}"):
        found = re.search(r"^totals:\s+(\d+)", path.read_text(errors="replace"), re.MULTILINE)
        count += int(found.group(1)) if found else 0
    return count


def control(what: str, pid: int) -> None:
    subprocess.run(["callgrind_control", what, str(pid)], check=True, capture_output=True)


def measure(args: argparse.Namespace, server: str, procs: run.Procs, upstream: str, work: Path) -> dict[str, float]:
    """One server under callgrind: warm up, count `requests`, then count the idle work; per request, corrected."""
    out = work / server
    out.mkdir()
    port = run.free_port()
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p"]
    env: dict[str, str] = {}
    api_key = None
    if server == "gateway":
        cmd = [args.python, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(port)]
        env = {"GEMINI_API_KEY": "bench-key", "GEMINI_BASE_URL": upstream}
        if args.team:
            soft, hard = team.gateway_env(work, "team", None)
            env |= soft | hard
            api_key = team.KEY
    else:
        cmd = [args.python, str(HERE / "baseline.py"), "--port", str(port), "--upstream", upstream]
    proc = procs.start(server, valgrind + cmd, env)
    base = f"http://127.0.0.1:{port}"
    run.wait_ready(procs, server, base + "/healthz", timeout=600)
    path = "/v1/responses" if args.responses else "/v1beta/models/gemini-2.5-flash:generateContent" if args.native \
        else "/v1/chat/completions"
    if args.native and args.stream:
        path = "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    flags = ["--stream"] * args.stream + ["--responses"] * args.responses + ["--native"] * args.native
    flags += ["--api-key", api_key] if api_key else []

    def send(n: int, warmup: int) -> None:
        cmd = [args.python, str(HERE / "loadgen.py"), "--url", base + path, "--requests", str(n),
               "--warmup", str(warmup), "--concurrency", str(args.concurrency), *flags]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=3600)

    n = args.requests or (200 if args.stream else 600)
    send(min(300, n), 10)
    control("--zero", proc.pid)
    started = time.monotonic()
    send(n, 0)
    busy_seconds = time.monotonic() - started
    control("--dump", proc.pid)
    started = time.monotonic()
    time.sleep(args.idle)
    control("--dump", proc.pid)
    idle_seconds = time.monotonic() - started
    time.sleep(0.5)
    busy, idle = totals(out, 1), totals(out, 2)
    rate = idle / idle_seconds
    return {"requests": n, "busy_per_request": busy / n, "idle_per_second": rate,
            "per_request": (busy - rate * busy_seconds) / n}


def main() -> None:
    args = parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (Debian: apt-get install valgrind)")
    work = Path(tempfile.mkdtemp(prefix="gp-server-instructions-"))
    procs = run.Procs(work)
    try:
        port = run.free_port()
        procs.start("upstream", [args.python, str(HERE / "fake_upstream.py"), "--port", str(port)])
        upstream = f"http://127.0.0.1:{port}"
        run.wait_ready(procs, "upstream", upstream + "/healthz", timeout=30)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            found = dict(zip(("gateway", "baseline"),
                             pool.map(lambda s: measure(args, s, procs, upstream, work), ("gateway", "baseline")), strict=True))
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    what = " ".join(a for a in sys.argv[1:] if a.startswith("--")) or "chat"
    gw, base = found["gateway"]["per_request"], found["baseline"]["per_request"]
    print(json.dumps(found, indent=1), file=sys.stderr)
    print(f"{what} (c={args.concurrency}): gateway {gw:,.0f}, forwarder {base:,.0f} instructions per request "
          f"(real servers, callgrind, idle work taken off): {gw / base:.2f}x")


if __name__ == "__main__":
    main()
