"""The console's web application (Starlette, Jinja2 templates next to this file, htmx).

Pages read the in-memory view under its lock and render; the two handlers that
change anything (an answer, a freeze) build a message and hand it to the
:class:`~streams.console.publish.Publisher`, which signs it and writes it to Kafka.
Nothing here touches the gate's state.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from streams.console import svg
from streams.console.auth import CSRF_FIELD, CSRF_HEADER, Auth, csrf_ok, csrf_token
from streams.console.metrics import ConsoleMetrics
from streams.console.publish import ConsoleError, build_answer, build_control
from streams.console.view import ConsoleView, Item
from streams.errors import EscalationError, InputError
from streams.models.decision import LEVEL_NAMES
from streams.policy.calibration import expected_calibration_error, reliability
from streams.policy.loader import parse_policy

if TYPE_CHECKING:
    from starlette.requests import Request

    from streams.console.feed import Feed
    from streams.console.publish import Publisher
    from streams.policy.model import Policy
    from streams.settings import Settings

HERE = Path(__file__).resolve().parent
WAITING_SHOWN = 50
FEED_SHOWN = 100
REQUALIFICATION_SOON_DAYS = 30
ANSWER_KINDS = ("approve", "reject", "reject_fp", "abort")
SESSION_SECONDS = 12 * 3600
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)

Handler = Callable[["Request"], Awaitable[Response]]


@dataclass
class Console:
    """What the pages need: the view and its lock, who is who, and where writes go."""

    settings: Settings
    view: ConsoleView
    auth: Auth
    policy: Policy
    publisher: Publisher | None = None
    feed: Feed | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    metrics: ConsoleMetrics = field(default_factory=ConsoleMetrics)
    clock: Callable[[], float] = time.time
    _policies: dict[str, Policy] = field(default_factory=dict)

    def policy_in_force(self) -> tuple[Policy, str]:
        """The policy the workers run: the last one loaded through ``control`` (from the
        ``state`` log), else the console's own policy file."""
        with self.lock:
            state = self.view.policy_state()
        if state is None:
            return self.policy, f"file {self.policy.source or self.settings.policy_file}"
        digest = str(state.get("digest"))
        if digest not in self._policies:
            try:
                self._policies[digest] = parse_policy(str(state["yaml"]), source="state")
            except Exception:  # a policy the gate took; show the file's rather than fail
                return self.policy, "file (the loaded policy could not be read here)"
        return self._policies[digest], f"loaded through control by {state.get('by')}"

    @property
    def ready(self) -> bool:
        return self.feed is None or self.feed.ready.is_set()


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    env = templates.env
    env.globals["LEVEL_NAMES"] = LEVEL_NAMES
    env.filters["when"] = _when
    env.filters["ago"] = _ago
    env.filters["json"] = lambda value: orjson.dumps(value).decode()
    env.filters["pct"] = lambda value: "unknown" if value is None else f"{value * 100:.1f}%"
    return templates


def _when(at: float | None) -> str:
    if not at:
        return "-"
    return dt.datetime.fromtimestamp(at, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m {seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h {seconds % 3600 // 60:02.0f}m"


class Refused(Exception):  # noqa: N818 - a response, not an error of ours
    def __init__(self, status: int, message: str, reason: str = "bad_field") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        #: The metric label: csrf, bad_field, not_found, unavailable.
        self.reason = reason


def create_app(console: Console) -> Starlette:
    """The ASGI application for one console."""
    templates = _templates()

    def render(request: Request, name: str, user: str, **context: Any) -> Response:
        response = templates.TemplateResponse(
            request,
            name,
            {
                "user": user,
                "csrf": csrf_token(request),
                "now": console.clock(),
                "ready": console.ready,
                "feed_error": console.feed.error if console.feed else None,
                "nav": name.partition(".")[0].partition("_")[0],
                **context,
            },
        )
        _secure(response)
        return response

    def signed_in(handler: Callable[[Request, str], Awaitable[Response]]) -> Handler:
        async def guarded(request: Request) -> Response:
            user = console.auth.user(request)
            if user is None:
                console.metrics.refused.labels("unauthenticated").inc()
                html = "text/html" in request.headers.get("accept", "")
                if request.method == "GET" and html and "hx-request" not in request.headers:
                    target = urlencode({"next": request.url.path})
                    return RedirectResponse(f"/login?{target}", status_code=303)
                return _text(401, "sign in first (session or trusted proxy header required)")
            try:
                return await handler(request, user)
            except Refused as exc:
                console.metrics.refused.labels(exc.reason).inc()
                return _text(exc.status, exc.message)

        return guarded

    async def form_of(request: Request) -> dict[str, str]:
        form = await request.form()
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        sent = values.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
        if not csrf_ok(request, sent):
            raise Refused(403, "csrf: missing or wrong CSRF token (reload the page)", "csrf")
        return values

    # ------------------------------------------------------------ sign-in

    async def login_page(request: Request) -> Response:
        return _secure(
            templates.TemplateResponse(
                request,
                "login.html",
                {"csrf": csrf_token(request), "next": _local(request.query_params.get("next"))},
            )
        )

    async def login(request: Request) -> Response:
        try:
            values = await form_of(request)
        except Refused as exc:
            console.metrics.refused.labels(exc.reason).inc()
            return _text(exc.status, exc.message)
        for name in ("username", "password"):
            if not values.get(name):
                console.metrics.refused.labels("bad_field").inc()
                return _text(400, f"{name}: field required")
        username = values["username"]
        ok = await run_in_threadpool(console.auth.accounts.check, username, values["password"])
        if not ok:
            console.metrics.refused.labels("bad_password").inc()
            response = templates.TemplateResponse(
                request,
                "login.html",
                {"csrf": csrf_token(request), "next": _local(values.get("next")),
                 "error": "That name and password do not match an account."},
                status_code=401,
            )  # fmt: skip
            return _secure(response)
        request.session.clear()
        request.session["user"] = username
        console.metrics.sign_ins.inc()
        request.session[CSRF_FIELD] = secrets.token_urlsafe(32)
        return RedirectResponse(_local(values.get("next")) or "/waiting", status_code=303)

    async def logout(request: Request) -> Response:
        try:
            await form_of(request)
        except Refused as exc:
            console.metrics.refused.labels(exc.reason).inc()
            return _text(exc.status, exc.message)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    async def healthz(_request: Request) -> Response:
        # The one unauthenticated route besides sign-in and static files: says only
        # whether the view has caught up with the topics.
        return JSONResponse({"ready": console.ready})

    # ------------------------------------------------------------ waiting

    def waiting_context(request: Request) -> dict[str, Any]:
        limit = _int(request, "limit", WAITING_SHOWN, 1, 500)
        now = console.clock()
        with console.lock:
            waiting = console.view.waiting(now)
            console.metrics.decisions.set(len(console.view.items))
            shown = waiting[:limit]
            stats = {i.decision_id: console.view.pattern_stats(i) for i in shown}
        console.metrics.waiting.set(len(waiting))
        return {"items": shown, "total": len(waiting), "stats": stats, "limit": limit}

    @signed_in
    async def waiting_page(request: Request, user: str) -> Response:
        return render(request, "waiting.html", user, **waiting_context(request))

    @signed_in
    async def waiting_list(request: Request, user: str) -> Response:
        return render(request, "waiting_list.html", user, **waiting_context(request))

    # ------------------------------------------------------------ decisions

    def feed_context(request: Request) -> dict[str, Any]:
        params = request.query_params
        level_text = params.get("level", "")
        level: int | None = None
        if level_text:
            if level_text not in {"0", "1", "2", "3", "4"}:
                raise Refused(400, f"level: must be 0 to 4, got {level_text[:20]!r}")
            level = int(level_text)
        filters = {k: params.get(k, "")[:256] for k in ("service", "pattern", "ai_system")}
        with console.lock:
            items = console.view.feed(level=level, limit=FEED_SHOWN, **filters)
            choices = console.view.choices()
        query = urlencode({"level": level_text, **filters})
        return {"items": items, "filters": {"level": level_text, **filters},
                "choices": choices, "query": query}  # fmt: skip

    @signed_in
    async def decisions_page(request: Request, user: str) -> Response:
        wanted = request.query_params.get("q", "").strip()
        if wanted:
            with console.lock:
                found = console.view.get(wanted)
            if found is not None:
                return RedirectResponse(f"/decisions/{found.decision_id}", status_code=303)
            context = feed_context(request)
            context["not_found"] = wanted[:256]
            return render(request, "decisions.html", user, **context)
        return render(request, "decisions.html", user, **feed_context(request))

    @signed_in
    async def decisions_feed(request: Request, user: str) -> Response:
        return render(request, "decisions_feed.html", user, **feed_context(request))

    def decision_context(decision_id: str) -> dict[str, Any]:
        with console.lock:
            item = console.view.get(decision_id)
            if item is None:
                raise Refused(
                    404, f"decision_id: no decision {decision_id[:80]!r} has been read", "not_found"
                )
            verified, how = console.view.chain_verdict(item)
            stats = console.view.pattern_stats(item)
            timeline = sorted(item.timeline, key=lambda s: (s.at, s.seq))
            waiting = item.waiting(console.clock())
        return {"item": item, "verified": verified, "how": how, "stats": stats,
                "timeline": timeline, "waiting": waiting}  # fmt: skip

    @signed_in
    async def decision_page(request: Request, user: str) -> Response:
        context = decision_context(request.path_params["decision_id"])
        return render(request, "decision.html", user, **context)

    @signed_in
    async def decision_timeline(request: Request, user: str) -> Response:
        context = decision_context(request.path_params["decision_id"])
        return render(request, "decision_timeline.html", user, **context)

    @signed_in
    async def decision_conditions(request: Request, user: str) -> Response:
        # Loaded when a waiting item's conditions are opened: the list stays small.
        context = decision_context(request.path_params["decision_id"])
        return render(request, "_conditions.html", user, **context)

    @signed_in
    async def answer(request: Request, user: str) -> Response:
        values = await form_of(request)
        decision_id = request.path_params["decision_id"]
        kind = values.get("kind", "")
        if kind not in ANSWER_KINDS:
            raise Refused(400, f"kind: must be one of {', '.join(ANSWER_KINDS)}, got {kind[:40]!r}")
        try:
            message = build_answer(
                "reject" if kind == "reject_fp" else kind,
                decision_id,
                user,
                now=dt.datetime.fromtimestamp(console.clock(), tz=dt.UTC),
                change_record=values.get("change_record", "").strip() or None,
                false_positive=kind == "reject_fp",
                reason=values.get("reason", ""),
            )
        except InputError as exc:
            raise Refused(400, str(exc)) from None
        await publish(console.publisher.answer if console.publisher else None, message, kind)
        if "hx-request" in request.headers:
            return render(request, "sent.html", user, message=message, kind=kind)
        return RedirectResponse(f"/decisions/{decision_id}", status_code=303)

    async def publish(send: Callable[[Any], Any] | None, message: Any, kind: str) -> None:
        if send is None:
            raise Refused(
                503, "this console has no connection to Kafka: nothing was sent", "unavailable"
            )
        try:
            await run_in_threadpool(send, message)
        except ConsoleError as exc:
            raise Refused(503, str(exc), "unavailable") from None
        console.metrics.sent.labels(kind).inc()

    # ------------------------------------------------------------ fleet

    @signed_in
    async def fleet_page(request: Request, user: str) -> Response:
        policy, policy_source = console.policy_in_force()
        now = console.clock()
        velocity = policy.velocity
        with console.lock:
            view = console.view
            services = [
                {
                    "name": name,
                    "velocity": view.velocity(name, now, velocity.window_seconds),
                    "budget": view.budget(name),
                    "frozen": view.frozen(name),
                }
                for name in view.services()
            ]
            fleet = {
                "velocity": view.fleet_velocity(now, velocity.window_seconds),
                "frozen": view.frozen("*"),
            }
            rates = view.fp_rates(now)
            judged = dict(view.tables.get("calibration", {}))
            requalifications = list(view.requalifications())
            events = list(reversed(view.fleet_events))[:20]
        days = policy.thresholds.autonomous.requalification_days
        due: list[dict[str, Any]] = []
        for pattern, action, value in requalifications:
            at = value.get("requalified_at")
            due_at = float(at) + days * 86400 if isinstance(at, int | float) else None
            soon = due_at is None or due_at - now < REQUALIFICATION_SOON_DAYS * 86400
            due.append({"pattern": pattern, "action": action, "value": value, "due_at": due_at,
                        "soon": soon or bool(value.get("revoked"))})  # fmt: skip
        due.sort(key=lambda d: float(d["due_at"] or 0.0))
        return render(
            request, "fleet.html", user, policy=policy, policy_source=policy_source,
            services=services, fleet=fleet, rates=rates, due=due, events=events,
            calibration=reliability_diagrams(judged, policy),
            fp_limit=policy.thresholds.assist.max_false_positive_rate,
            soon_days=REQUALIFICATION_SOON_DAYS,
        )  # fmt: skip

    @signed_in
    async def freeze(request: Request, user: str) -> Response:
        values = await form_of(request)
        command = values.get("command", "")
        if command not in {"freeze", "unfreeze"}:
            raise Refused(400, f"command: must be freeze or unfreeze, got {command[:40]!r}")
        service = values.get("service", "").strip()
        try:
            message = build_control(
                command,
                user,
                now=dt.datetime.fromtimestamp(console.clock(), tz=dt.UTC),
                service=service or None,
                reason=values.get("reason", ""),
            )
        except InputError as exc:
            raise Refused(400, str(exc)) from None
        await publish(console.publisher.control if console.publisher else None, message, command)
        return RedirectResponse("/fleet", status_code=303)

    # ------------------------------------------------------------ trends

    @signed_in
    async def trends_page(request: Request, user: str) -> Response:
        hours = _int(request, "hours", 3, 1, 6)
        now = console.clock()
        end = int(now // 60 * 60)
        minutes = list(range(end - hours * 3600 + 60, end + 60, 60))
        with console.lock:
            trends = console.view.trends
            levels = [list(trends.levels.get(m, [0, 0, 0, 0, 0])) for m in minutes]
            timeouts = [[trends.timeouts.get(m, 0)] for m in minutes]
            trips = [[trends.velocity_trips.get(m, 0)] for m in minutes]
            dead = [[trends.dead_letters.get(m, 0)] for m in minutes]
            horizon = now - hours * 3600
            answers = [(s, k) for at, s, k in trends.answer_times if at >= horizon]
        labels = [dt.datetime.fromtimestamp(m, tz=dt.UTC).strftime("%H:%M") for m in minutes]
        names = tuple(f"Level {n}" for n in range(5))
        buckets = ((30, "<30s"), (60, "30s-1m"), (120, "1-2m"), (300, "2-5m"), (600, "5-10m"),
                   (float("inf"), ">10m"))  # fmt: skip
        histogram = [[0, 0] for _ in buckets]
        for seconds, kind in answers:
            slot = next(i for i, (limit, _) in enumerate(buckets) if seconds < limit)
            histogram[slot][0 if kind == "approved" else 1] += 1
        bars = svg.stacked_bars
        charts = {
            "levels": bars(levels, colours=svg.LEVEL_COLOURS, names=names, labels=labels,
                           title="decisions per minute"),
            "answers": bars(histogram, colours=("#16a34a", "#b91c1c"),
                            names=("approved", "rejected"), labels=[b[1] for b in buckets],
                            title="time to answer", width=480),
            "timeouts": bars(timeouts, colours=("#ea580c",), names=("pages",), labels=labels,
                             title="approval timeouts", width=480),
            "trips": bars(trips, colours=("#7c3aed",), names=("trips",), labels=labels,
                          title="velocity-guard trips", width=480),
            "dead": bars(dead, colours=("#525252",), names=("dead letters",), labels=labels,
                         title="dead letters", width=480),
            "legend": svg.legend(svg.LEVEL_COLOURS, names),
        }  # fmt: skip
        totals = {
            "levels": [sum(c[i] for c in levels) for i in range(5)],
            "timeouts": sum(c[0] for c in timeouts),
            "trips": sum(c[0] for c in trips),
            "dead": sum(c[0] for c in dead),
            "answers": len(answers),
            "median": _median([s for s, _ in answers]),
        }
        return render(request, "trends.html", user, charts=charts, totals=totals, hours=hours)

    @signed_in
    async def home(_request: Request, _user: str) -> Response:
        return RedirectResponse("/waiting", status_code=303)

    secret = (
        console.settings.console_session_secret.get_secret_value()
        if console.settings.console_session_secret
        else secrets.token_urlsafe(32)
    )
    routes = [
        Route("/", home),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/waiting", waiting_page),
        Route("/waiting/list", waiting_list),
        Route("/decisions", decisions_page),
        Route("/decisions/feed", decisions_feed),
        Route("/decisions/{decision_id:str}", decision_page),
        Route("/decisions/{decision_id:str}/timeline", decision_timeline),
        Route("/decisions/{decision_id:str}/conditions", decision_conditions),
        Route("/decisions/{decision_id:str}/answer", answer, methods=["POST"]),
        Route("/fleet", fleet_page),
        Route("/fleet/freeze", freeze, methods=["POST"]),
        Route("/trends", trends_page),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [
        Middleware(
            SessionMiddleware,
            secret_key=secret,
            session_cookie="escalation_console",
            max_age=SESSION_SECONDS,
            same_site="strict",
            https_only=False,
        )
    ]
    return Starlette(routes=routes, middleware=middleware)


def _secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def _text(status: int, message: str) -> Response:
    return _secure(PlainTextResponse(message + "\n", status_code=status))


def _local(target: str | None) -> str:
    """``target`` when it is a path of this site (no open redirect), else ``""``."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return ""


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise Refused(400, f"{name}: must be an integer, got {text[:20]!r}") from None
    if not low <= value <= high:
        raise Refused(400, f"{name}: must be in [{low}, {high}], got {value}")
    return value


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def item_deadline_text(item: Item, now: float) -> str:
    deadline = item.deadline()
    if deadline is None:
        return "-"
    left = deadline - now
    return f"{_ago(left)} left" if left >= 0 else f"overdue {_ago(left)}"


__all__ = ["Console", "EscalationError", "create_app"]


def reliability_diagrams(judged: dict[str, Any], policy: Any) -> list[dict[str, Any]]:
    """Per AI system and model, its reliability table as a diagram, and its ECE."""
    c = policy.calibration
    out = []
    for key in sorted(judged):
        rows = reliability(judged[key], bins=c.bins, min_samples=c.min_samples)
        total = sum(r.count for r in rows)
        if not total:
            continue
        points = [(r.lower, r.upper, r.count, r.accuracy, r.calibrated) for r in rows]
        out.append(
            {
                "key": key,
                "judged": total,
                "ece": expected_calibration_error(judged[key], bins=c.bins),
                "svg": svg.reliability_diagram(points, title=f"reliability of {key}"),
            }
        )
    return out
