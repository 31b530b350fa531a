"""A real Prometheus Alertmanager (Debian's ``prometheus-alertmanager``) for the tests.

Started on a free loopback port with its own configuration and storage directory,
clustering off (``--cluster.listen-address=`` empty). Its routes send each on-call
target of the chain (label ``escalation``) to a webhook receiver of its own, served
by :class:`Webhooks` in the test process, so a test sees which receiver Alertmanager
notified, firing and resolved.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2

from streams.testing import wait_until

BINARY = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
TARGETS = ("sre-oncall-primary", "sre-oncall-secondary", "sre-manager")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Webhooks:
    """Records Alertmanager's webhook notifications, by receiver (the URL path)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                with outer._lock:
                    outer.received.append((self.path.strip("/"), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def notified(self, receiver: str, decision_id: str, status: str) -> list[dict[str, Any]]:
        """Alerts of ``decision_id`` that ``receiver`` was told about with ``status``."""
        with self._lock:
            return [
                alert
                for path, body in self.received
                if path == receiver
                for alert in body.get("alerts", [])
                if alert["labels"].get("decision_id") == decision_id and alert["status"] == status
            ]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def config(webhooks: Webhooks) -> str:
    routes = "".join(
        f"    - matchers: ['escalation=\"{target}\"']\n      receiver: {target}\n"
        for target in TARGETS
    )
    receivers = "".join(
        f"  - name: {target}\n    webhook_configs:\n"
        f"      - url: http://127.0.0.1:{webhooks.port}/{target}\n        send_resolved: true\n"
        for target in TARGETS
    )
    return (
        "route:\n"
        "  receiver: default\n"
        "  group_by: [alertname, decision_id, escalation_number]\n"
        "  group_wait: 1s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "  routes:\n"
        f"{routes}"
        "receivers:\n"
        "  - name: default\n"
        f"{receivers}"
    )


class LocalAlertmanager:
    """One Alertmanager process on 127.0.0.1."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.webhooks = Webhooks()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> LocalAlertmanager:
        config_file = self.directory / "alertmanager.yml"
        config_file.write_text(config(self.webhooks))
        storage = self.directory / "data"
        storage.mkdir(exist_ok=True)
        log = (self.directory / "alertmanager.log").open("ab")
        self.process = subprocess.Popen(
            [
                BINARY,
                f"--config.file={config_file}",
                f"--storage.path={storage}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
                "--log.level=info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"alertmanager exited: {self.log_tail()}")
            try:
                return httpx2.get(f"{self.url}/-/ready", timeout=2).status_code == 200
            except httpx2.HTTPError:
                return False

        if not wait_until(ready, timeout=60):
            raise RuntimeError(f"alertmanager did not become ready: {self.log_tail()}")
        return self

    def log_tail(self, lines: int = 20) -> str:
        path = self.directory / "alertmanager.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def alerts(self, decision_id: str | None = None, **filters: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (optionally only one decision's)."""
        params = dict(filters)
        if decision_id:
            params["filter"] = f'decision_id="{decision_id}"'
        response = httpx2.get(f"{self.url}/api/v2/alerts", params=params, timeout=10)
        response.raise_for_status()
        return list(response.json())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.webhooks.stop()
