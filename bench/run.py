"""One-command benchmark run: gateway vs thin-forwarder baseline (owns: orchestration + report).

Starts the fake upstream, the baseline forwarder and the gateway on free ports,
waits for ``GET /healthz`` on each, then for every round and every scenario
runs ``loadgen.py`` against the baseline, the upstream directly and the gateway
(order alternates between rounds so drift hits both servers alike). Figures
are medians over rounds, a ratio the median of the rounds' ratios; "added" latency is proxied minus direct latency from
the same round. Prints a markdown report and dumps everything as JSON into
``bench/results/`` (git-ignored). Every started process is killed at the end,
also on error or Ctrl-C.

    .venv/bin/python bench/run.py                      # full run (3 rounds)
    .venv/bin/python bench/run.py --quick              # smoke check
    .venv/bin/python bench/run.py --gateway-cmd "{python} bench/baseline.py --port {port} --upstream {upstream}"

``--gateway-cmd`` placeholders: ``{python}``, ``{port}``, ``{upstream}``. The
gateway gets ``GEMINI_API_KEY=bench-key`` and ``GEMINI_BASE_URL=<upstream>``.

The team kinds (``--kinds team,team-redis``) run the chat cells through gateways
of their own, started with a limited client key, usage records, metrics and the
access log (and a redis-server for ``team-redis``); see bench/team.py. Peak RSS
of every server is reported. Exit code 1 when a team gateway's check failed
(a request refused or not recorded), 2 when a server fails, else 0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import team

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
DEFAULT_GATEWAY_CMD = "{python} -m app serve --host 127.0.0.1 --port {port}"
MODEL = "gemini-2.5-flash"
SCENARIOS = [
    ("unary", 1), ("unary", 16), ("unary", 64), ("stream", 1), ("stream", 16), ("stream", 64),
    ("native", 1), ("native", 16), ("native-stream", 1), ("native-stream", 16),
    ("responses", 1), ("responses", 16), ("responses", 64),  # the stream of "stream" through POST /v1/responses
    # POST /v1/embeddings, `--embed-inputs` texts per request (one batchEmbedContents upstream), float / base64
    ("embeddings-float", 1), ("embeddings-float", 16), ("embeddings-base64", 1), ("embeddings-base64", 16),
    # the chat cells through a gateway with a limited client key, usage records, metrics, access log (bench/team.py)
    ("team-unary", 1), ("team-unary", 16), ("team-unary", 64), ("team-stream", 1), ("team-stream", 16), ("team-stream", 64),
    # the same with the limits shared through Redis
    ("team-redis-unary", 1), ("team-redis-unary", 16), ("team-redis-unary", 64),
    ("team-redis-stream", 1), ("team-redis-stream", 16), ("team-redis-stream", 64),
]
# the gateway process serving a kind (default "gateway"; the team kinds have their own, bench/team.py)
PROFILE = {"team-unary": "team", "team-stream": "team", "team-redis-unary": "team-redis",
           "team-redis-stream": "team-redis"}
BASE_KIND = {k: k.rsplit("-", 1)[1] for k in PROFILE}  # the request a team kind sends: unary or stream
STREAMED = frozenset({"stream", "native-stream", "responses", "team-stream", "team-redis-stream"})
NATIVE = frozenset({"native", "native-stream"})
EMBEDDINGS = {"embeddings-float": "float", "embeddings-base64": "base64"}  # kind -> encoding_format
SCENARIO_NAMES = {"unary": "non-streamed", "stream": "streamed",
                  "native": "native non-streamed", "native-stream": "native streamed",
                  "responses": "Responses streamed",
                  "embeddings-float": "embeddings float", "embeddings-base64": "embeddings base64",
                  "team-unary": "team non-streamed", "team-stream": "team streamed",
                  "team-redis-unary": "team+Redis non-streamed", "team-redis-stream": "team+Redis streamed"}
KIND_GROUPS = {"embeddings": tuple(EMBEDDINGS), "team": ("team-unary", "team-stream"),
               "team-redis": ("team-redis-unary", "team-redis-stream")}  # `--kinds` names standing for several kinds
EMBED_MODEL = "gemini-embedding-001"
SERVERS = ("baseline", "gateway")
CPU_FLAG_RATIO = 1.5
NATIVE_CPU_FLAG_RATIO = 1.2  # the native routes are a forwarder with auth
TEAM_CPU_FLAG_RATIO = {"team": 1.5, "team-redis": 1.75}  # limits, usage records, metrics, access log (+ Redis)
LATENCY_FLAG_MS = 1.0


# ---------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Procs:
    """Started server processes; each in its own session so the whole group can be killed."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self.dirs: list[Path] = []  # temporary directories, removed once every process is gone

    def start(self, name: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "wb")
        p = subprocess.Popen(
            cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self.procs[name] = p
        return p

    def log_tail(self, name: str, lines: int = 25) -> str:
        text = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with code {p.returncode}; log tail:\n{self.log_tail(name)}")

    def stop(self, name: str, grace: float = 30.0) -> None:
        """SIGTERM one process group and wait for its leader (SIGKILL after `grace` seconds)."""
        p = self.procs[name]
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if p.poll() is not None:
                return
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                return
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                pass

    def stop_all(self) -> None:
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
            alive = [p for p in self.procs.values() if p.poll() is None]
            for p in alive:
                try:
                    os.killpg(p.pid, sig)  # pgid == pid thanks to start_new_session
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            for p in alive:
                try:
                    p.wait(max(0.05, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for p in self.procs.values():  # leftover children of an already-dead group leader
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


def wait_ready(procs: Procs, name: str, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p = procs.procs[name]
        if p.poll() is not None:
            raise RuntimeError(f"{name} exited with code {p.returncode} before becoming ready; "
                               f"log tail:\n{procs.log_tail(name)}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{name} not ready at {url} after {timeout:.0f}s; log tail:\n{procs.log_tail(name)}")


def loadgen(
    python: str, url: str, stream: bool, n: int, conc: int, pids: list[int], native: bool = False, responses: bool = False,
    embeddings: int = 0, encoding: str = "float", api_key: str | None = None,
) -> dict:
    cmd = [python, str(HERE / "loadgen.py"), "--url", url, "--requests", str(n), "--concurrency", str(conc)]
    cmd += ["--api-key", api_key] if api_key else []
    cmd += ["--stream"] * stream + ["--native"] * native + ["--responses"] * responses
    if embeddings:  # megabytes per answer: a shorter warm-up than loadgen's default of 50 requests
        cmd += ["--embeddings", str(embeddings), "--encoding", encoding, "--warmup", str(max(5, 2 * conc))]
    cmd += [a for pid in pids for a in ("--pid", str(pid))]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout)


# ---------------------------------------------------------------- figures
def figures(cell: dict, direct: dict, server_pid: int, upstream_pid: int) -> dict:
    """The per-round figures of one server in one scenario."""
    lat, dlat = cell["latency_ms"], direct["latency_ms"]
    f = {
        "cpu_us": cell["cpu_us_per_req"][str(server_pid)],
        "upstream_cpu_us": cell["cpu_us_per_req"].get(str(upstream_pid)),
        "rps": cell["rps"],
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
        "added_p50_ms": lat["p50"] - dlat["p50"],
        "added_p99_ms": lat["p99"] - dlat["p99"],
        "errors": cell["errors"],
    }
    if cell["stream"]:
        f.update(
            ttfc_p50_ms=cell["ttfc_ms"]["p50"],
            added_ttfc_p50_ms=cell["ttfc_ms"]["p50"] - direct["ttfc_ms"]["p50"],
            events_per_stream=cell["events_per_stream"],
            reads_per_stream=cell["reads_per_stream"],
        )
    return f


ROWS = {  # (figure key, label, format); "lower" figures are better when smaller
    "unary": [
        ("cpu_us", "CPU µs / request", "{:.0f}"),
        ("rps", "requests/s", "{:.0f}"),
        ("added_p50_ms", "added p50 latency (ms)", "{:.3f}"),
        ("added_p99_ms", "added p99 latency (ms)", "{:.3f}"),
    ],
    "stream": [
        ("cpu_us", "CPU µs / stream", "{:.0f}"),
        ("ttfc_p50_ms", "time to first chunk p50 (ms)", "{:.3f}"),
        ("added_ttfc_p50_ms", "added TTFC p50 (ms)", "{:.3f}"),
        ("added_p50_ms", "added total p50 (ms)", "{:.3f}"),
        ("rps", "streams/s", "{:.0f}"),
        ("events_per_stream", "`data:` events / stream", "{:.0f}"),
        ("reads_per_stream", "client reads / stream", "{:.1f}"),
    ],
}


def ratio(g: float | None, b: float | None) -> float | None:
    if g is None or b is None or abs(b) < 1e-9:
        return None
    return g / b


def summarize(raw: list[dict], scenarios: list[tuple[str, int]]) -> dict:
    """Median of every figure over rounds; the gateway/baseline ratio: the median of the rounds' ratios, and their
    min/max."""
    out: dict = {}
    for kind, conc in scenarios:
        key = f"{kind}-c{conc}"
        rounds = [r[key] for r in raw]
        s: dict = {"direct": {
            "p50_ms": statistics.median(r["direct"]["latency_ms"]["p50"] for r in rounds),
            "p99_ms": statistics.median(r["direct"]["latency_ms"]["p99"] for r in rounds),
            "rps": statistics.median(r["direct"]["rps"] for r in rounds),
            "upstream_cpu_us": statistics.median(r["direct"]["cpu_us"] for r in rounds),
        }}
        for server in SERVERS:
            figs = [r[server]["figures"] for r in rounds]
            s[server] = {k: statistics.median(f[k] for f in figs) for k in figs[0] if figs[0][k] is not None}
            s[server]["errors"] = sum(f["errors"] for f in figs)
        s["ratio"], s["ratio_range"] = {}, {}
        for k in s["baseline"]:
            # The ratio of one round compares two measurements made one after the other: load that comes and goes
            # between rounds cancels out of it, not out of a ratio of medians taken over different rounds.
            per_round = [ratio(r["gateway"]["figures"].get(k), r["baseline"]["figures"].get(k)) for r in rounds]
            per_round = [x for x in per_round if x is not None]
            s["ratio"][k] = statistics.median(per_round) if per_round else None
            s["ratio_range"][k] = [min(per_round), max(per_round)] if per_round else None
        out[key] = s
    return out


def flags_for(summary: dict) -> list[str]:
    flags = []
    for key, s in summary.items():
        r = s["ratio"].get("cpu_us")
        kind = key.rsplit("-c", 1)[0]
        bound = (TEAM_CPU_FLAG_RATIO[PROFILE[kind]] if kind in PROFILE
                 else NATIVE_CPU_FLAG_RATIO if kind in NATIVE else CPU_FLAG_RATIO)
        if r is not None and r > bound:
            flags.append(f"{key}: gateway CPU per request is {r:.2f}× the baseline (> {bound})")
    for key, fig in (("unary-c1", "added_p50_ms"), ("stream-c1", "added_ttfc_p50_ms"), ("responses-c1", "added_ttfc_p50_ms"),
                     ("team-unary-c1", "added_p50_ms"), ("team-stream-c1", "added_ttfc_p50_ms")):
        v = summary[key]["gateway"].get(fig) if key in summary else None
        if v is not None and v >= LATENCY_FLAG_MS:
            flags.append(f"{key}: gateway {fig} is {v:.3f} ms (>= {LATENCY_FLAG_MS} ms)")
    for key, s in summary.items():
        for server in SERVERS:
            if s[server]["errors"]:
                flags.append(f"{key}: {server} had {s[server]['errors']} failed requests")
    return flags


def fmt(v, spec: str) -> str:
    return "–" if v is None else spec.format(v)


def report(meta: dict, summary: dict, flags: list[str]) -> str:
    a = meta["args"]
    lines = [
        f"## gemini-proxy benchmark — {meta['started']}",
        "",
        f"- host: {meta['host']['nproc']} CPUs, Python {meta['host']['python']}, "
        f"load avg before/after: {meta['host']['loadavg_before']} / {meta['host']['loadavg_after']}",
        f"- rounds: {a['rounds']} (medians shown; a ratio is the median of the rounds' ratios), "
        f"{a['requests']} requests per non-streamed cell, "
        f"{a['stream_requests']} streams per streamed cell ({a['chunks']} chunks, "
        f"{a['chunk_delay_ms']} ms apart), {a['embed_requests']} requests per embeddings cell "
        f"({a['embed_inputs']} inputs each, {a['embed_dims']} values per vector)",
        f"- gateway: `{meta['gateway_cmd']}`",
        *(["- **quick smoke check**: 1 round, small samples — figures are indicative only"] if a["quick"] else []),
        "- added latency = latency through the server − latency straight to the fake upstream (same round)",
        "",
        "| scenario | figure | baseline | gateway | gateway/baseline | ratio range over rounds |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, s in summary.items():
        kind, conc = key.rsplit("-c", 1)
        name = f"{SCENARIO_NAMES[kind]} c={conc}"
        for fig, label, spec in ROWS["stream" if kind in STREAMED else "unary"]:
            rng = s["ratio_range"].get(fig)
            lines.append(
                f"| {name} | {label} | {fmt(s['baseline'].get(fig), spec)} | {fmt(s['gateway'].get(fig), spec)} "
                f"| {fmt(s['ratio'].get(fig), '{:.2f}×')} "
                f"| {'–' if not rng else f'{rng[0]:.2f}–{rng[1]:.2f}'} |"
            )
    lines += [
        "",
        "Direct to the fake upstream (reference; upstream CPU shows it is not the bottleneck):",
        "",
        "| scenario | p50 (ms) | p99 (ms) | req/s | upstream CPU µs / req |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, s in summary.items():
        d = s["direct"]
        lines.append(f"| {key} | {d['p50_ms']:.3f} | {d['p99_ms']:.3f} | {d['rps']:.0f} | {d['upstream_cpu_us']:.0f} |")
    lines += ["", "Peak RSS (VmHWM of the process tree at the end of the run, MiB; `gateway` served the other kinds):",
              "", "| process | peak RSS (MiB) |", "|---|---:|"]
    lines += [f"| {name} | {fmt(mb, '{:.1f}')} |" for name, mb in meta.get("peak_rss_mb", {}).items()]
    checks = meta.get("team_checks", {})
    if checks:
        lines += ["", "Team gateways after the run (a cell whose requests were not all admitted and recorded fails):", "",
                  "| gateway | requests sent | usage records | refused (rate_limited) | limiter's requests in window "
                  "| requests_total metric | check |", "|---|---:|---:|---:|---:|---:|---|"]
        for profile, c in checks.items():
            lines.append(f"| {profile} | {c['requests_sent']} | {c['usage_records']} | {c['rate_limited']:.0f} "
                         f"| {c['limiter_requests_in_window']} | {c['requests_total_metric']:.0f} "
                         f"| {'ok' if not c['problems'] else 'FAILED'} |")
    if meta.get("notes"):
        lines += ["", *[f"- {n}" for n in meta["notes"]]]
    lines += ["", "**Flags:**" if flags else "**Flags:** none"]
    lines += [f"- ⚠ {f}" for f in flags]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gateway-cmd", default=DEFAULT_GATEWAY_CMD,
                    help="command starting the gateway; placeholders {python} {port} {upstream}")
    ap.add_argument("--gateway-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for the gateway (repeatable)")
    ap.add_argument("--python", default=sys.executable, help="interpreter for all processes")
    ap.add_argument("--quick", action="store_true", help="smoke check: few requests, 1 round")
    ap.add_argument("--requests", type=int, help="requests per non-streamed cell (default 2000, quick 500)")
    ap.add_argument("--stream-requests", type=int, help="streams per streamed cell (default max(150, requests/4))")
    ap.add_argument("--rounds", type=int, help="rounds (default 3, quick 1)")
    ap.add_argument("--chunks", type=int, default=100, help="SSE chunks per upstream stream")
    ap.add_argument("--chunk-delay-ms", type=float, default=0.0, help="fake upstream delay between chunks")
    ap.add_argument("--embed-requests", type=int, help="requests per embeddings cell (default 100, quick 20)")
    ap.add_argument("--embed-inputs", type=int, default=100, help="inputs per embeddings request")
    ap.add_argument("--embed-dims", type=int, default=3072, help="values per vector the fake upstream answers")
    ap.add_argument("--ready-timeout", type=float, default=30.0)
    ap.add_argument("--kinds", default=",".join(SCENARIO_NAMES),
                    help=f"comma-separated scenario kinds to run (default: all of {', '.join(SCENARIO_NAMES)}; "
                         "`embeddings` means both embeddings kinds, `team` team-unary,team-stream, "
                         "`team-redis` team-redis-unary,team-redis-stream)")
    args = ap.parse_args(argv)
    args.kinds = [k for name in args.kinds.split(",") if name for k in KIND_GROUPS.get(name, (name,))]
    unknown = set(args.kinds) - set(SCENARIO_NAMES)
    if unknown:
        ap.error(f"unknown scenario kinds: {', '.join(sorted(unknown))}")
    if not 1 <= args.embed_inputs <= 100:
        ap.error("--embed-inputs must be 1-100 (one batchEmbedContents call upstream)")
    args.requests = args.requests or (500 if args.quick else 2000)
    args.stream_requests = args.stream_requests or max(150, args.requests // 4)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.embed_requests = args.embed_requests or (20 if args.quick else 100)
    return args


def run(args: argparse.Namespace, procs: Procs) -> dict:
    meta: dict = {"started": dt.datetime.now().isoformat(timespec="seconds"), "args": vars(args), "notes": []}
    redis_url = None
    if any(PROFILE.get(k) == "team-redis" for k in args.kinds):
        redis_url = team.start_redis(procs, free_port)
        if redis_url is None:
            msg = ("team-redis cells skipped: redis-server is not installed "
                   "(`apt-get install -y redis-server`, then run again)")
            print(msg, file=sys.stderr)
            meta["notes"].append(msg)
            args.kinds = [k for k in args.kinds if PROFILE.get(k) != "team-redis"]
    gateways = sorted({PROFILE.get(k, "gateway") for k in args.kinds})  # gateway processes this run needs
    ports = {name: free_port() for name in ("upstream", "baseline", *gateways)}
    upstream = f"http://127.0.0.1:{ports['upstream']}"
    py = args.python
    env = {"GEMINI_API_KEY": "bench-key", "GEMINI_BASE_URL": upstream,
           # the gateway's key database, kept with the results (not gemini-proxy.db in the repository)
           "GEMINI_PROXY_STORAGE__DATABASE_URL": f"sqlite+aiosqlite:///{RESULTS / 'gemini-proxy.db'}"}
    user_env = dict(kv.split("=", 1) for kv in args.gateway_env)
    envs = {"gateway": {**env, **user_env}}
    for profile in gateways:
        if profile in team.PROFILES:
            soft, hard = team.gateway_env(RESULTS, profile, redis_url if profile == "team-redis" else None)
            envs[profile] = {**env, **soft, **user_env, **hard}

    up = procs.start("upstream", [py, str(HERE / "fake_upstream.py"), "--port", str(ports["upstream"]),
                                  "--chunks", str(args.chunks), "--delay-ms", str(args.chunk_delay_ms),
                                  "--embed-dims", str(args.embed_dims), "--embeddings", str(args.embed_inputs)])
    pids = {"upstream": up.pid}
    pids["baseline"] = procs.start("baseline", [py, str(HERE / "baseline.py"), "--port", str(ports["baseline"]),
                                                "--upstream", upstream], envs["gateway"]).pid
    gateway_cmds = {}
    for profile in gateways:
        gateway_cmds[profile] = (args.gateway_cmd.replace("{python}", shlex.quote(py))
                                 .replace("{port}", str(ports[profile])).replace("{upstream}", upstream))
        pids[profile] = procs.start(profile, shlex.split(gateway_cmds[profile]), envs[profile]).pid
    for name in ("upstream", "baseline", *gateways):
        wait_ready(procs, name, f"http://127.0.0.1:{ports[name]}/healthz", args.ready_timeout)
    sent = dict.fromkeys(gateways, 0)  # requests sent to each gateway (usage records expected)
    for profile in gateways:
        if profile in team.PROFILES:  # the key is limited (headers) and client auth is on
            meta["notes"].append(f"{profile}: first request's rate-limit headers: "
                                 f"{team.probe(f'http://127.0.0.1:{ports[profile]}', MODEL)}")
            sent[profile] += 1

    native = {
        "native": f"/v1beta/models/{MODEL}:generateContent",
        "native-stream": f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
    }
    urls = {
        ("direct", "unary"): upstream + native["native"],
        ("direct", "stream"): upstream + native["native-stream"],
    }
    urls["direct", "native"], urls["direct", "native-stream"] = urls["direct", "unary"], urls["direct", "stream"]
    urls["direct", "responses"] = urls["direct", "stream"]
    for kind in EMBEDDINGS:  # the fake upstream answers `--embed-inputs` vectors
        urls["direct", kind] = f"{upstream}/v1beta/models/{EMBED_MODEL}:batchEmbedContents"
    for server in [s for s in SERVERS if s in ports]:  # no "gateway" when only team kinds run
        for kind in ("unary", "stream"):
            urls[server, kind] = f"http://127.0.0.1:{ports[server]}/v1/chat/completions"
        for kind, path in native.items():
            urls[server, kind] = f"http://127.0.0.1:{ports[server]}{path}"
        urls[server, "responses"] = f"http://127.0.0.1:{ports[server]}/v1/responses"
        for kind in EMBEDDINGS:
            urls[server, kind] = f"http://127.0.0.1:{ports[server]}/v1/embeddings"
    for kind, base in BASE_KIND.items():  # team kinds: the chat request, to their own gateway
        urls["direct", kind], urls["baseline", kind] = urls["direct", base], urls["baseline", base]
        if PROFILE[kind] in ports:
            urls["gateway", kind] = f"http://127.0.0.1:{ports[PROFILE[kind]]}/v1/chat/completions"

    meta.update(gateway_cmd=gateway_cmds.get("gateway") or next(iter(gateway_cmds.values())), host={
        "nproc": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release(),
        "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg())})
    scenarios = [(kind, conc) for kind, conc in SCENARIOS if kind in args.kinds]
    raw = []
    for rnd in range(args.rounds):
        order = ["baseline", "direct", "gateway"]
        if rnd % 2:
            order.reverse()
        cells: dict = {}
        for kind, conc in scenarios:
            n = args.stream_requests if kind in STREAMED else args.embed_requests if kind in EMBEDDINGS else args.requests
            key = f"{kind}-c{conc}"
            profile = PROFILE.get(kind, "gateway")
            proc = {"baseline": "baseline", "gateway": profile}  # target -> process
            cell = cells[key] = {}
            for target in order:
                print(f"round {rnd + 1}/{args.rounds}  {key:<10} {target:<8}", file=sys.stderr, flush=True)
                acct = [pids["upstream"]] if target == "direct" else [pids[proc[target]], pids["upstream"]]
                res = cell[target] = loadgen(
                    py, urls[target, kind], kind in STREAMED, n, conc, acct, native=kind in NATIVE,
                    responses=kind == "responses" and target != "direct",
                    embeddings=args.embed_inputs if kind in EMBEDDINGS else 0, encoding=EMBEDDINGS.get(kind, "float"),
                    api_key=team.KEY if target == "gateway" and profile in team.PROFILES else None,
                )
                procs.check_alive()
                if target == "gateway":
                    sent[profile] += res["sent"]
                if res["errors"] == res["requests"]:
                    raise RuntimeError(f"{target}: every request failed, e.g. {res['first_error']}")
            d = cell["direct"]
            d["cpu_us"] = d["cpu_us_per_req"][str(pids["upstream"])]
            for server in SERVERS:
                cell[server]["figures"] = figures(cell[server], d, pids[proc[server]], pids["upstream"])
        raw.append(cells)
    meta["host"]["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    meta["peak_rss_mb"] = {name: team.peak_rss_mb(pids[name]) for name in ("baseline", *gateways)}
    if "redis" in procs.procs:
        meta["peak_rss_mb"]["redis-server"] = team.peak_rss_mb(procs.procs["redis"].pid)
    meta["team_checks"] = {
        profile: team.check(procs, profile, f"http://127.0.0.1:{ports[profile]}", MODEL, sent[profile], py, ROOT,
                            envs[profile])
        for profile in gateways if profile in team.PROFILES
    }
    summary = summarize(raw, scenarios)
    flags = flags_for(summary)
    flags += [f"FAILED {profile}: {p}" for profile, c in meta["team_checks"].items() for p in c["problems"]]
    return {"meta": meta, "summary": summary, "flags": flags, "raw": raw,
            "report": report(meta, summary, flags)}


def main(argv=None) -> int:
    args = parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "logs").mkdir(exist_ok=True)
    procs = Procs(RESULTS / "logs")

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        result = run(args, procs)
    except RuntimeError as e:
        print(f"benchmark aborted: {e}", file=sys.stderr)
        if "gateway" in str(e).split(" ", 1)[0]:
            print("(is the gateway implemented? try --gateway-cmd; see bench/README.md)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
    path = RESULTS / f"run-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(result, indent=1))
    print(result["report"])
    print(f"JSON: {path.relative_to(ROOT)}", file=sys.stderr)
    return 1 if any(f.startswith("FAILED") for f in result["flags"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
