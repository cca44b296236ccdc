"""The gateway's own instructions per request (or stream), counted by valgrind: a figure that does not move with load.

CPU time on these shared 2-core machines moves by 10-30 % from one run to the next, more than most single changes
weigh. The instructions a request executes do not: `bench/inprocess.py` is run twice under valgrind's callgrind
(`--per-block N1` and `N2`, both at once, one a core), and the difference of the two totals divided by the
requests between them is what one request costs, start-up and warm-up cancelled out. Two runs of the same code
agree within ~1 % for non-streamed requests; for streams, take N2 - N1 >= 200 (the background tasks that wake
on a timer weigh ~50 times more under valgrind, and add a few % of scatter with fewer streams).

    .venv/bin/python bench/instructions.py                                   # chat, non-streamed
    .venv/bin/python bench/instructions.py --team                            # any bench/inprocess.py option
    .venv/bin/python bench/instructions.py --chat-stream --events-per-read 25 --n1 10 --n2 210
    .venv/bin/python bench/instructions.py --rev HEAD~1 --chat-stream        # another revision (a git worktree)

Each run takes about two minutes (start-up under valgrind). It needs `valgrind` (Debian: `apt-get install
valgrind`). Instructions are not time (a cache miss costs more than an add), so read them beside
`bench/run.py`'s ratios: they say whether a change removed work, not how much faster the server got.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def total(cwd: Path, args: list[str], n: int) -> int:
    """Instructions of one whole run of bench/inprocess.py with `n` requests a block (one block)."""
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
           str(HERE / "inprocess.py"), *args, "--blocks", "1", "--per-block", str(n)]
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode or not found:
        raise SystemExit(f"valgrind run failed ({done.returncode}):\n{done.stderr[-3000:]}\n{done.stdout[-2000:]}")
    return int(found.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n1", type=int, default=50, help="requests a block of the short run")
    ap.add_argument("--n2", type=int, default=350, help="requests a block of the long run")
    ap.add_argument("--rev", help="measure this git revision instead of the working directory (a temporary worktree)")
    args, rest = ap.parse_known_args()
    # inprocess.py runs min(2000, 2n) warm-up requests, then n measured ones: 3n in all up to 666 a block
    if not 0 < args.n1 < args.n2 <= 666:
        raise SystemExit("need 0 < --n1 < --n2 <= 666 (the warm-up is capped at 2000 requests above)")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    cwd = Path(os.getcwd())
    tmp = None
    if args.rev:
        tmp = Path(tempfile.mkdtemp(prefix="gp-instructions-"))
        subprocess.run(["git", "worktree", "add", "--detach", str(tmp / "tree"), args.rev], check=True,
                       capture_output=True)
        cwd = tmp / "tree"
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            short, long = pool.map(lambda n: total(cwd, rest, n), (args.n1, args.n2))
    finally:
        if tmp is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(tmp / "tree")], check=False, capture_output=True)
            shutil.rmtree(tmp, ignore_errors=True)
    per = (long - short) / (3 * (args.n2 - args.n1))
    what = " ".join(rest) or "chat"
    print(f"{args.rev or cwd}: {what}: {per:,.0f} instructions per request (in process, callgrind; {short} / {long})")


if __name__ == "__main__":
    main()
