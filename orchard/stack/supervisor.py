"""`orchard up / down / status`: start the stack, wait for health, stop exactly it."""

from __future__ import annotations

import socket
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from orchard.errors import OrchardError
from orchard.settings import ENV_PREFIX, Settings
from orchard.stack import process
from orchard.stack.services import SERVICE_NAMES, Service, build_services


class StackError(OrchardError):
    pass


@dataclass
class ServiceState:
    service: Service
    record: process.ProcessRecord | None
    running: bool
    healthy: bool

    @property
    def ok(self) -> bool:
        """Healthy, or not meant to run here."""
        return self.healthy or self.service.unavailable is not None

    @property
    def label(self) -> str:
        if self.service.unavailable:
            return "unavailable"
        if self.service.external:
            return "healthy (external)" if self.healthy else "unreachable (external)"
        if not self.running:
            return "stopped"
        return "healthy" if self.healthy else "unhealthy"


def log_path(settings: Settings, name: str) -> Path:
    return settings.logs_dir / f"{name}.log"


def select(settings: Settings, names: list[str] | None) -> list[Service]:
    services = build_services(settings)
    if not names:
        return services
    unknown = [name for name in names if name not in SERVICE_NAMES]
    if unknown:
        raise StackError(f"unknown service {unknown[0]!r}: choose from {', '.join(SERVICE_NAMES)}")
    return [service for service in services if service.name in names]


def probe(service: Service, client: httpx.Client) -> bool:
    try:
        response = client.get(service.health_url, headers=service.health_headers(), timeout=3.0)
        return service.healthy(response)
    except (httpx.HTTPError, ValueError):
        return False


def service_state(settings: Settings, service: Service, client: httpx.Client) -> ServiceState:
    record = None if service.external else process.read_record(settings.run_dir, service.name)
    running = record is not None and record.process() is not None
    healthy = (running or service.external) and probe(service, client)
    return ServiceState(service, record, running, healthy)


def status(settings: Settings, names: list[str] | None = None) -> list[ServiceState]:
    with httpx.Client() as client:
        return [service_state(settings, service, client) for service in select(settings, names)]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(settings: Settings, services: list[Service]) -> None:
    for service in services:
        for setting, port in service.ports.items():
            if port_in_use(settings.host, port):
                env_name = ENV_PREFIX + setting.split(" ")[0].upper()
                raise StackError(
                    f"port {port} ({setting}, {service.title}) on {settings.host} is taken: "
                    f"stop what uses it or set {env_name}"
                )


def tail(path: Path, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines))
    except FileNotFoundError:
        return ""


def _table(states: dict[str, str], services: list[Service]) -> Table:
    table = Table(box=None, show_header=False)
    for service in services:
        table.add_row(f"  {service.title}", states[service.name])
    return table


def wait_healthy(
    settings: Settings,
    services: list[Service],
    records: dict[str, process.ProcessRecord],
    console: Console,
) -> None:
    """Poll each health URL until all answer; fail fast if a process dies."""
    started = time.monotonic()
    waiting = {service.name: service for service in services}
    states = {service.name: "starting…" for service in services}
    with (
        httpx.Client() as client,
        Live(
            _table(states, services), console=console, transient=False, auto_refresh=False
        ) as live,
    ):
        while waiting:
            elapsed = time.monotonic() - started
            for name, service in list(waiting.items()):
                record = records.get(name)
                if record is not None and record.process() is None:
                    raise StackError(
                        f"{service.title} exited during start-up: see {log_path(settings, name)}"
                        f"\n{tail(log_path(settings, name))}"
                    )
                if probe(service, client):
                    states[name] = f"[green]healthy[/] ({elapsed:.0f} s)"
                    del waiting[name]
                elif elapsed > service.startup_timeout:
                    raise StackError(
                        f"{service.title} not healthy after {service.startup_timeout:.0f} s "
                        f"({service.health_url}): see {log_path(settings, name)}"
                    )
                else:
                    states[name] = f"starting… {elapsed:.0f} s"
            live.update(_table(states, services), refresh=True)
            if waiting:
                time.sleep(0.5)
    if not console.is_terminal:
        console.line()  # Live leaves the cursor after its last render when piped


def up(settings: Settings, console: Console, names: list[str] | None = None) -> list[Service]:
    """Start every selected service that is not running; return those it started."""
    services = select(settings, names)
    with httpx.Client() as client:
        states = [service_state(settings, service, client) for service in services]
    to_start = [
        s.service
        for s in states
        if not s.service.external and not s.service.unavailable and not s.running
    ]
    for state in states:
        if state.service.external and not state.healthy:
            raise StackError(
                f"{state.service.title} at {state.service.url} does not answer "
                f"{state.service.health_url}: check the URL setting or that service"
            )
    if not to_start:
        return []
    check_ports(settings, to_start)
    records: dict[str, process.ProcessRecord] = {}
    try:
        for service in to_start:
            env = service.prepare()
            records[service.name] = process.spawn(
                service=service.name,
                command=service.command or [],
                env=env,
                log_path=log_path(settings, service.name),
                run_dir=settings.run_dir,
                marker=process.marker_for(settings.home, service.name),
                cwd=settings.home,
            )
        console.print(
            f"Starting {', '.join(s.title for s in to_start)} (logs in {settings.logs_dir})"
        )
        wait_healthy(settings, to_start, records, console)
    except BaseException:
        # Leave nothing half-started behind: stop what this call started.
        for service in to_start:
            stop_service(settings, service)
        raise
    return to_start


def stop_service(settings: Settings, service: Service) -> int:
    record = process.read_record(settings.run_dir, service.name)
    if record is None:
        record = process.sweep_record(settings.home, service.name)
        if not process.family(record):
            return 0
    count = process.stop(record, settings.run_dir)
    if service.cleanup:
        service.cleanup()
    return count


def down(settings: Settings, names: list[str] | None = None) -> dict[str, int]:
    """Stop the selected services; return how many processes each had."""
    stopped: dict[str, int] = {}
    # Reverse order: the API and Airflow go before the Ray head their jobs run on.
    for service in reversed(select(settings, names)):
        count = stop_service(settings, service)
        if count:
            stopped[service.name] = count
    return stopped
