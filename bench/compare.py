"""Has a change made the gateway slower? This checkout against a git revision, interleaved (owns: A/B runs).

`run.py` answers "how far is the gateway from a bare forwarder", but on a
shared or loaded machine its ratio moves by 30 % from one run to the next,
which hides a 5 % regression. This runs three servers at once against one
fake upstream: the baseline forwarder, the gateway as checked out, and the
gateway at `--rev` (checked out into a temporary git worktree), and measures
them in short blocks, in a new random order every round, so load that comes
and goes hits all three alike. The figure to read is the median over rounds
of the per-round ratio new/old (CPU per request of the server process).

    .venv/bin/python bench/compare.py --rev HEAD~3                 # chat non-streamed + streamed, c=1
    .venv/bin/python bench/compare.py --rev v0.3 --kinds unary --concurrency 16 --rounds 12

Both gateways run with this checkout's interpreter (`--python`), each from its
own source tree, with `GEMINI_API_KEY=bench-key` and the fake upstream.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import HERE, ROOT, Procs, free_port, loadgen, wait_ready

PATHS = {"unary": "/v1/chat/completions", "stream": "/v1/chat/completions", "responses": "/v1/responses",
         "native": "/v1beta/models/gemini-2.5-flash:generateContent",
         "native-stream": "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
         "embeddings-float": "/v1/embeddings", "embeddings-base64": "/v1/embeddings"}  # 100 texts, 100 x 3072 back
EMBEDDINGS = {"embeddings-float": "float", "embeddings-base64": "base64"}
SERVERS = ("baseline", "old", "new")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", required=True, help="the git revision to compare against (old)")
    ap.add_argument("--kinds", default="unary,stream", help=f"comma-separated, of {', '.join(PATHS)}")
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--requests", type=int, default=500, help="per block, non-streamed (streams: a quarter, at least 100)")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--new-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment of the new gateway only (e.g. GEMINI_PROXY_SERVER__ACCESS_LOG=off)")
    args = ap.parse_args(argv)
    unknown = set(args.kinds.split(",")) - set(PATHS)
    if unknown:
        ap.error(f"unknown kinds: {', '.join(sorted(unknown))}")
    return args


def compare(args: argparse.Namespace, old_tree: Path, procs: Procs) -> list[str]:
    py = args.python
    ports = {name: free_port() for name in ("upstream", *SERVERS)}
    upstream = f"http://127.0.0.1:{ports['upstream']}"
    env = {"GEMINI_API_KEY": "bench-key", "GEMINI_BASE_URL": upstream}
    procs.start("upstream", [py, str(HERE / "fake_upstream.py"), "--port", str(ports["upstream"]), "--chunks", "100"])
    pids = {"baseline": procs.start("baseline", [py, str(HERE / "baseline.py"), "--port", str(ports["baseline"]),
                                                 "--upstream", upstream], env).pid}
    for name, tree in (("old", old_tree), ("new", ROOT)):
        db = f"sqlite+aiosqlite:///{tree / 'bench-compare.db'}"
        cmd = ["env", "-C", str(tree), py, "-m", "app", "serve", "--host", "127.0.0.1", "--port", str(ports[name])]
        extra = dict(kv.split("=", 1) for kv in args.new_env) if name == "new" else {}
        pids[name] = procs.start(name, cmd, {**env, "GEMINI_PROXY_STORAGE__DATABASE_URL": db, **extra}).pid
    for name in ("upstream", *SERVERS):
        wait_ready(procs, name, f"http://127.0.0.1:{ports[name]}/healthz", 60)

    lines = []
    for kind in args.kinds.split(","):
        stream = kind in ("stream", "native-stream", "responses")
        n = max(100, args.requests // 4) if stream else max(20, args.requests // 10) if kind in EMBEDDINGS else args.requests
        cpu: dict[str, list[float]] = {s: [] for s in SERVERS}
        for r in range(args.rounds):
            order = list(SERVERS)
            random.shuffle(order)
            for server in order:
                out = loadgen(py, f"http://127.0.0.1:{ports[server]}{PATHS[kind]}", stream, n, args.concurrency,
                              [pids[server]], native=kind.startswith("native"), responses=kind == "responses",
                              embeddings=100 if kind in EMBEDDINGS else 0, encoding=EMBEDDINGS.get(kind, "float"))
                if out["errors"]:
                    raise RuntimeError(f"{server} {kind}: {out['errors']} errors, first: {out['first_error']}")
                cpu[server].append(out["cpu_us_per_req"][str(pids[server])])
            print(f"round {r + 1}/{args.rounds} {kind}", file=sys.stderr)

        def ratio(a: str, b: str, cpu: dict[str, list[float]] = cpu) -> float:
            return statistics.median(x / y for x, y in zip(cpu[a], cpu[b], strict=True))

        spread = sorted(x / y for x, y in zip(cpu["new"], cpu["old"], strict=True))
        lines.append(
            f"| {kind} c={args.concurrency} | {statistics.median(cpu['baseline']):.0f} | "
            f"{statistics.median(cpu['old']):.0f} | {statistics.median(cpu['new']):.0f} | "
            f"{ratio('old', 'baseline'):.2f}x | {ratio('new', 'baseline'):.2f}x | **{ratio('new', 'old'):.2f}x** | "
            f"{spread[0]:.2f}-{spread[-1]:.2f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.rev],
                         capture_output=True, text=True, check=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="gp-compare-"))
    old_tree = tmp / "old"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old_tree), rev], check=True)
    procs = Procs(HERE / "results" / "logs")
    try:
        lines = compare(args, old_tree, procs)
    finally:
        procs.stop_all()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"CPU µs per request (streams: per stream), medians over {args.rounds} interleaved rounds; "
          f"old = {rev}, new = this checkout{' (with uncommitted changes)' if _dirty() else ''}\n")
    print("| scenario | baseline | old | new | old/baseline | new/baseline | new/old | new/old range |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(lines))
    return 0


def _dirty() -> bool:
    out = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                         capture_output=True, text=True)
    return bool(out.stdout.strip())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
