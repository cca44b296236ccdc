"""Load generator (owns: driving load, timing requests, reading server CPU).

Runs in its own process (aiohttp client on uvloop) so the server's CPU account
only holds the server's own work. It sends ``--warmup`` requests, snapshots the
CPU time of every ``--pid`` process tree, sends ``--requests`` requests at
``--concurrency``, snapshots again and prints one JSON object:

    {"requests", "sent", "concurrency", "errors", "first_error", "elapsed_s", "rps",
     "latency_ms": {"p50", "p90", "p99", "mean", "max"},
     "ttfc_ms": {...}, "events_per_stream": n, "reads_per_stream": n,  # --stream
     "cpu_us_per_req": {"<pid>": us, ...}}

Latency is request start -> full body read. For streams (``--stream``), TTFC is
request start -> first body bytes, ``events`` counts ``data:`` lines seen and
``reads`` counts the body pieces the client received (how fragmented the relay was).

CPU time of a process = user+system time of all its threads (what
/proc/<pid>/stat utime+stime reports), read with nanosecond resolution from the
kernel's per-process CPU clock, falling back to /proc/<pid>/stat (10 ms ticks);
the CPU of all descendant processes (forked workers) is added.

Usage: ``python bench/loadgen.py --url http://127.0.0.1:8002/v1/chat/completions
--requests 2000 --concurrency 16 --pid 1234 [--stream] [--native | --responses | --embeddings 100 [--encoding base64]]``
(``--api-key KEY``: the bearer token sent, default bench-key, for a gateway with client keys;
``--native``: a Gemini ``generateContent`` body, for the native routes; streaming is then in the URL;
``--embeddings N``: a ``POST /v1/embeddings`` body with N texts).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

import aiohttp

CHAT_BODY = {
    "model": "gemini-2.5-flash",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello in a friendly way."},
    ],
    "max_tokens": 256,
}


# The same request in Gemini's own shape, for the native routes (streaming is in their URL).
NATIVE_BODY = {
    "systemInstruction": {"parts": [{"text": "You are terse."}]},
    "contents": [{"role": "user", "parts": [{"text": "Say hello in a friendly way."}]}],
    "generationConfig": {"maxOutputTokens": 256},
}


# The same request through the Responses API (`POST /v1/responses`).
RESPONSES_BODY = {
    "model": "gemini-2.5-flash",
    "instructions": "You are terse.",
    "input": "Say hello in a friendly way.",
    "max_output_tokens": 256,
}


def body_bytes(stream: bool, native: bool = False, responses: bool = False, embeddings: int = 0,
               encoding: str = "float") -> bytes:
    if embeddings:  # an embeddings request: that many sentences of ~50 characters
        texts = [f"Sentence number {i} of a document about the benchmark." for i in range(embeddings)]
        body = {"model": "gemini-embedding-001", "input": texts, "encoding_format": encoding}
        return json.dumps(body, separators=(",", ":")).encode()
    if native:
        return json.dumps(NATIVE_BODY, separators=(",", ":")).encode()
    body = RESPONSES_BODY if responses else CHAT_BODY
    return json.dumps({**body, "stream": True} if stream else body, separators=(",", ":")).encode()


# ---------------------------------------------------------------- CPU accounting
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _proc_cpu_s(pid: int) -> float:
    try:  # CPUCLOCK_SCHED process clock of another pid: ((~pid) << 3) | 2
        return time.clock_gettime_ns(((~pid) << 3) | 2) / 1e9
    except OSError:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (forked workers), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by pid, all its threads and all its descendants."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        try:
            total += _proc_cpu_s(p)
        except (OSError, IndexError, ValueError):
            pass  # exited in between
    return total


# ---------------------------------------------------------------- load
def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def summary(values: list[float]) -> dict:
    if not values:
        return {}
    ms = [v * 1000 for v in values]
    return {
        "p50": pct(ms, 0.50),
        "p90": pct(ms, 0.90),
        "p99": pct(ms, 0.99),
        "mean": statistics.fmean(ms),
        "max": max(ms),
    }


FIRST_ERROR: list[str] = []  # one sample failure, to make a misconfigured target obvious


async def one(session, url, body, headers, stream, out):
    t0 = time.perf_counter()
    ttfc = None
    events = reads = 0
    async with session.post(url, data=body, headers=headers) as resp:
        if stream:
            async for chunk in resp.content.iter_any():
                if ttfc is None:
                    ttfc = time.perf_counter() - t0
                events += chunk.count(b"data:")
                reads += 1
        else:
            await resp.read()
        t1 = time.perf_counter()
        ok = resp.status == 200
        if not ok and not FIRST_ERROR:
            FIRST_ERROR.append(f"HTTP {resp.status}: {(await resp.read())[:300]!r}")
    out.append((ok, t1 - t0, ttfc, events, reads))


async def run_phase(session, url, body, headers, stream, n, concurrency):
    results: list[tuple] = []
    remaining = n

    async def worker():
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            try:
                await one(session, url, body, headers, stream, results)
            except (TimeoutError, aiohttp.ClientError) as e:
                FIRST_ERROR[:] = FIRST_ERROR or [f"{type(e).__name__}: {e}"]
                results.append((False, 0.0, None, 0, 0))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def main_async(args) -> dict:
    body = body_bytes(args.stream, args.native, args.responses, args.embeddings, args.encoding)
    headers = {"content-type": "application/json", "authorization": f"Bearer {args.api_key}"}
    connector = aiohttp.TCPConnector(limit=args.concurrency, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:
        await run_phase(session, args.url, body, headers, args.stream, args.warmup, args.concurrency)
        cpu0 = {pid: tree_cpu_s(pid) for pid in args.pid}
        t0 = time.perf_counter()
        results = await run_phase(session, args.url, body, headers, args.stream, args.requests, args.concurrency)
        elapsed = time.perf_counter() - t0
        cpu1 = {pid: tree_cpu_s(pid) for pid in args.pid}

    good = [r for r in results if r[0]]
    out = {
        "url": args.url,
        "stream": args.stream,
        "requests": args.requests,
        "sent": args.warmup + args.requests,  # warm-up included: what the server saw
        "concurrency": args.concurrency,
        "errors": len(results) - len(good),
        "first_error": FIRST_ERROR[0] if FIRST_ERROR else None,
        "elapsed_s": elapsed,
        "rps": len(good) / elapsed,
        "latency_ms": summary([r[1] for r in good]),
        "cpu_us_per_req": {str(p): (cpu1[p] - cpu0[p]) * 1e6 / max(1, len(good)) for p in args.pid},
    }
    if args.stream:
        out["ttfc_ms"] = summary([r[2] for r in good if r[2] is not None])
        out["events_per_stream"] = statistics.fmean(r[3] for r in good) if good else 0
        out["reads_per_stream"] = statistics.fmean(r[4] for r in good) if good else 0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=None, help="default: max(50, 2*concurrency, requests/10)")
    ap.add_argument("--stream", action="store_true", help='send "stream":true and read the body as SSE')
    ap.add_argument("--native", action="store_true", help="send a Gemini generateContent body (the native routes)")
    ap.add_argument("--responses", action="store_true", help="send a Responses API body (POST /v1/responses)")
    ap.add_argument("--embeddings", type=int, default=0, help="send an embeddings request with this many inputs")
    ap.add_argument("--encoding", default="float", choices=("float", "base64"), help="encoding_format of --embeddings")
    ap.add_argument("--api-key", default="bench-key", help="sent as `Authorization: Bearer <key>` (a gateway client key)")
    ap.add_argument("--pid", type=int, action="append", default=[], help="process tree(s) to account CPU for")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args()
    if args.warmup is None:
        args.warmup = max(50, 2 * args.concurrency, args.requests // 10)

    import uvloop

    json.dump(uvloop.run(main_async(args)), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
