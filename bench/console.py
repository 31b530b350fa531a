"""How fast the console's pages answer with 10,000 approvals open.

The console's view is filled through its real folding code (``ConsoleView.apply_audit``)
from audit records sealed as the worker seals them (``streams.console.sample``): by
default 10,000 open Level 2 approvals, plus 10,000 decisions of the other levels, some
answered, with freeze, budget and velocity state. The app is served by uvicorn on a
loopback port, as ``escalation console`` serves it, and each page is fetched over HTTP
with httpx by a signed-in client (``--rounds`` times, after two warm-up fetches);
the median and p99 per page are printed, and the run fails when a p99 is over
``--limit-ms`` (200). As the console's feed does after its catch-up, the folded view
is moved out of the garbage collector's way with ``gc.freeze()`` (``--no-gc-freeze``
shows the difference: a full collection over the view is a p99 outlier).

    .venv/bin/python bench/console.py                 # 10,000 open approvals
    .venv/bin/python bench/console.py --open 1000 --rounds 20 --json out.json

No broker is needed: the benchmark measures the pages, not Kafka.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import orjson
import uvicorn

from streams.console.app import Console, create_app
from streams.console.auth import Accounts, Auth, add_user
from streams.console.sample import Chains
from streams.console.view import ConsoleView
from streams.files import read_policy
from streams.settings import Settings

PASSWORD = "bench password"  # noqa: S105 - a throwaway account of the benchmark
OTHER = ("novel", "low-confidence", "deadlock-statefulset", "untrusted", "payments")


def fill(view: ConsoleView, policy_file: Path, open_approvals: int, others: int) -> float:
    """Fold the records into ``view``; returns the seconds the folding took."""
    chains = Chains(read_policy(policy_file))
    now = dt.datetime.now(tz=dt.UTC)
    records = []
    decisions = []
    for n in range(others):
        at = now - dt.timedelta(seconds=3 * 3600 * (1 - n / max(others, 1)))
        decision, sealed = chains.decide(OTHER[n % len(OTHER)], n, at, seen=0 if n % 5 == 0 else 12)
        records += sealed
        decisions.append(decision)
        if decision["level"] == 2 and n % 2 == 0:
            records += chains.answer(decision, "approve", "alice", at + dt.timedelta(seconds=40))
    for n in range(open_approvals):
        at = now - dt.timedelta(seconds=3600 * (1 - n / max(open_approvals, 1)))
        records += chains.decide("wide-blast", 10**6 + n, at, tag="open-")[1]
    for service in ("checkout-api", "search-api", "orders-worker"):
        view.apply_state({"table": "budgets", "key": service, "op": "budget", "remaining": 0.8,
                          "at": now.timestamp()})  # fmt: skip
    view.apply_state({"table": "freeze", "key": "search-api", "op": "freeze", "user": "alice",
                      "at": now.timestamp()})  # fmt: skip
    started = time.perf_counter()
    for record in records:
        view.apply_audit(record)
    return time.perf_counter() - started


def check(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"bench/console.py: {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--open", type=int, default=10_000, help="open approvals")
    parser.add_argument("--others", type=int, default=10_000, help="decisions of other levels")
    parser.add_argument("--rounds", type=int, default=50, help="fetches per page")
    parser.add_argument("--limit-ms", type=float, default=200.0, help="p99 allowed per page")
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="leave out the gc.freeze() the console's feed does after its catch-up",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="console-bench-"))
    add_user(work / "accounts", "alice", PASSWORD)
    settings = Settings(data_dir=work, console_max_decisions=args.open + args.others + 100)
    policy_file = Path(__file__).resolve().parents[1] / "policies" / "escalation-policy.yaml"
    view = ConsoleView(max_decisions=settings.console_max_decisions)
    folding = fill(view, policy_file, args.open, args.others)
    if not args.no_gc_freeze:  # as streams/console/feed.py does once it has caught up
        gc.collect()
        gc.freeze()
    waiting = len(view.waiting(time.time()))
    print(f"folded {view.audit_records} audit records in {folding:.1f} s "
          f"({view.audit_records / folding:,.0f}/s); {waiting} waiting")  # fmt: skip
    console = Console(
        settings=settings,
        view=view,
        auth=Auth.of(Accounts.load(work / "accounts"), "", "X-Forwarded-User"),
        policy=read_policy(policy_file),
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(console), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    some = next(iter(view.open))
    pages = [
        "/waiting", "/waiting/list", "/decisions", "/decisions/feed", "/decisions?level=2",
        "/decisions?service=search-api&level=3", f"/decisions/{some}",
        f"/decisions/{some}/timeline", "/fleet", "/trends?hours=3",
    ]  # fmt: skip
    figures: dict[str, dict[str, float]] = {}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
        check(token is not None, "no CSRF token on the sign-in page")
        assert token is not None  # noqa: S101 - for the type checker; checked above
        signed = client.post("/login", data={"username": "alice", "password": PASSWORD,
                                             "csrf": token[1]})  # fmt: skip
        check(signed.status_code in {200, 303}, f"sign-in failed: {signed.text}")
        for path in pages:
            for _ in range(2):
                check(client.get(path).status_code == 200, path)
            times = []
            size = 0
            for _ in range(args.rounds):
                started = time.perf_counter()
                response = client.get(path)
                times.append((time.perf_counter() - started) * 1000)
                check(response.status_code == 200, path)
                size = len(response.content)
            times.sort()
            p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
            figures[path] = {"median_ms": statistics.median(times), "p99_ms": p99, "bytes": size}
            print(f"{path:45s} median {statistics.median(times):6.1f} ms   p99 {p99:6.1f} ms"
                  f"   {size / 1024:6.0f} KiB")  # fmt: skip
    server.should_exit = True
    thread.join(timeout=10)
    if args.json:
        args.json.write_bytes(orjson.dumps({"open": args.open, "others": args.others,
                                            "waiting": waiting, "pages": figures},
                                           option=orjson.OPT_INDENT_2))  # fmt: skip
    slow = [p for p, f in figures.items() if f["p99_ms"] > args.limit_ms]
    if slow:
        print(f"over {args.limit_ms:.0f} ms at p99: {', '.join(slow)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
