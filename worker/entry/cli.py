"""The ``smsq`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

import redis

from producers import redis_conn
from producers.cli import add_producer_commands
from producers.client import SmsqClient
from producers.errors import SmsqError
from producers.keys import DEFAULT_PREFIX
from worker.core.config import ConfigError, Settings, load_settings, redis_url_problem, safe_url
from worker.providers import known_kinds


class CliError(SmsqError):
    """A problem the user can fix: printed as one line, exit status ``status``."""

    def __init__(self, message: str, status: int = 3) -> None:
        super().__init__(message)
        self.status = status


def _client(args: argparse.Namespace) -> SmsqClient:
    """A client on the configured Redis, validating providers against the config when there is one."""
    if os.environ.get("SMSQ_CONFIG"):
        settings = load_settings()
        url, prefix, providers = settings.redis_url, settings.key_prefix, settings.provider_names()
    else:
        url, prefix, providers = (
            os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            DEFAULT_PREFIX,
            None,
        )
        problem = redis_url_problem(url)
        if problem:
            raise CliError(f"REDIS_URL: {problem}", 2)
    try:
        connection = redis_conn.sync_client(url, socket_connect_timeout=5, socket_timeout=30)
        client = SmsqClient(client=connection, prefix=prefix, providers=providers)
    except ValueError as exc:
        raise CliError(f"REDIS_URL {safe_url(url)!r} is not usable: {exc}", 2) from None
    client.redis.ping()  # unreachable: one line from main(), before any output
    return client


def _require_redis(settings: Settings) -> None:
    """Fail fast, with one line, when Redis does not answer (before starting anything)."""
    from worker.entry.health import check_redis, client_for

    client = client_for(settings)
    try:
        ok, detail = check_redis(client, settings)
    finally:
        client.close()
    if not ok:
        raise CliError(detail)


def _worker(args: argparse.Namespace) -> int:
    import logging

    from worker.entry.exposition import MetricsPortError, WorkerExposition
    from worker.entry.supervisor import Supervisor

    settings = load_settings()  # fail fast, with every problem listed, before starting any
    _require_redis(settings)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    exposition = WorkerExposition(
        settings,
        args.metrics_host or settings.metrics.host,
        args.metrics_port if args.metrics_port is not None else settings.metrics.worker_port,
    )
    try:
        return Supervisor(
            args.processes, args.threads, args.queues, settings.worker, exposition
        ).run()
    except MetricsPortError as exc:
        raise CliError(str(exc)) from None


def _sandbox(args: argparse.Namespace) -> int:
    from worker.devtools.sandboxes import run_forever
    from worker.providers.sandbox_kit import Fault, OutcomeMix

    ports = {}
    for item in args.port or []:
        kind, _, port = item.partition("=")
        ports[kind] = int(port)
    mix = OutcomeMix(
        delivered=args.delivered,
        undeliverable=args.undeliverable,
        expired=args.expired,
        final_after=args.final_after,
    )
    options: dict[str, dict[str, str]] = {}
    for item in args.option or []:
        target, _, value = item.partition("=")
        kind, _, key = target.partition(".")
        if not key or not value:
            print(f"--option {item!r}: expected KIND.KEY=VALUE", file=sys.stderr)
            return 2
        options.setdefault(kind, {})[key] = value
    faults: dict[str, dict[str, Fault]] = {}
    for item in args.faults or []:
        kind, _, spec = item.partition("=")
        try:
            faults[kind] = {k: Fault.from_mapping(v) for k, v in json.loads(spec).items()}
        except (ValueError, TypeError, AttributeError) as exc:
            print(
                f"--faults {kind}: expected KIND='{{\"endpoint\": {{...}}}}': {exc}",
                file=sys.stderr,
            )
            return 2
    asyncio.run(run_forever(args.kinds or known_kinds(), args.host, ports, mix, options, faults))
    return 0


def _web(args: argparse.Namespace) -> int:
    from worker.entry.web import main as web_main

    settings = load_settings()
    _require_redis(settings)
    port = args.port
    if port is None and os.environ.get("PORT"):
        try:
            port = int(os.environ["PORT"])
        except ValueError:
            raise CliError(f"PORT: must be a port number, got {os.environ['PORT']!r}") from None
    try:
        return web_main(host=args.host, port=port, settings=settings)
    except OSError as exc:
        raise CliError(f"cannot serve the web process: {exc.strerror or exc}") from None


def _scheduler(args: argparse.Namespace) -> int:
    from worker.tracking.scheduler import main as scheduler_main

    settings = load_settings()
    _require_redis(settings)
    host = args.metrics_host or settings.metrics.host
    port = args.metrics_port if args.metrics_port is not None else settings.metrics.scheduler_port
    try:
        return scheduler_main(settings, metrics_host=host, metrics_port=port)
    except OSError as exc:
        raise CliError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc} "
            "(set [metrics] scheduler_port / --metrics-port; 0 takes any free port)"
        ) from None


def _health(args: argparse.Namespace) -> int:
    from worker.entry.health import run_checks

    settings = load_settings()
    ok, checks = run_checks(settings, args.process)
    if args.json:
        print(json.dumps({"ok": ok, "checks": checks}))
    else:
        for name, check in checks.items():
            print(f"{'ok  ' if check['ok'] else 'FAIL'} {name}: {check['detail']}")
    if not ok:
        failed = next(f"{n}: {c['detail']}" for n, c in checks.items() if not c["ok"])
        print(f"smsq health: unhealthy: {failed}", file=sys.stderr)
    return 0 if ok else 1


def _top(args: argparse.Namespace) -> int:
    from worker.entry.top import run_top

    settings = load_settings()
    _require_redis(settings)
    return run_top(settings, interval=args.interval, once=args.once, metrics_url=args.metrics)


def _check_config(args: argparse.Namespace) -> int:
    settings = load_settings()
    print(f"configuration OK: {len(settings.accounts)} accounts, {len(settings.routes)} routes")
    for name, acc in settings.accounts.items():
        print(f"  {name}: {acc.kind} at {acc.base_url}")
    _require_redis(settings)
    print(f"Redis at {safe_url(settings.redis_url)}: reachable")
    return 0


def _dev(args: argparse.Namespace) -> int:
    from worker.devtools.dev import run_dev

    return run_dev()


def _demo(args: argparse.Namespace) -> int:
    from worker.devtools.demo import run_demo

    return run_demo(bulk=args.bulk, otp=args.otp, workers=args.processes)


def _metrics_flags(parser: argparse.ArgumentParser, key: str) -> None:
    parser.add_argument(
        "--metrics-port", type=int, help=f"/metrics and /healthz port (default: [metrics] {key})"
    )
    parser.add_argument(
        "--metrics-host", help="address to serve metrics on (default: [metrics] host)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smsq", description="Queue-driven SMS dispatch.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_producer_commands(sub, _client)

    worker = sub.add_parser(
        "worker", help="run the worker processes (intake and dispatch), each restarted if it dies"
    )
    worker.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    worker.add_argument("--threads", type=int, default=8)
    worker.add_argument(
        "--queues", nargs="*", help="only these queues (e.g. smsq-intake-otp smsq-dispatch-otp)"
    )
    _metrics_flags(worker, "worker_port")
    worker.set_defaults(func=_worker)

    sandbox = sub.add_parser("sandbox", help="run the providers' sandbox servers")
    sandbox.add_argument(
        "kinds", nargs="*", help=f"providers (default: all of {', '.join(known_kinds())})"
    )
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", action="append", help="KIND=PORT (default: a free port)")
    sandbox.add_argument("--delivered", type=float, default=0.9)
    sandbox.add_argument("--undeliverable", type=float, default=0.07)
    sandbox.add_argument("--expired", type=float, default=0.03)
    sandbox.add_argument("--final-after", type=float, default=2.0, help="seconds to a final status")
    sandbox.add_argument(
        "--faults",
        action="append",
        help="""KIND='{"send.php": {"error_rate": 0.2, "timeout_rate": 0.05}}' (also PUT """
        "/__sandbox/faults at run time; keys: latency, error_rate, timeout_rate, drop_rate, "
        'malformed_rate; endpoint "*" for all)',
    )
    sandbox.add_argument(
        "--option",
        action="append",
        help="KIND.KEY=VALUE passed to that sandbox (e.g. intis.balance=1e6)",
    )
    sandbox.set_defaults(func=_sandbox)

    web = sub.add_parser(
        "web", help="serve provider pushes, /health, /healthz, /metrics and the HTTP intake"
    )
    web.add_argument("--host", help="default: [web] host")
    web.add_argument("--port", type=int, help="default: $PORT, else [web] port")
    web.set_defaults(func=_web)

    scheduler = sub.add_parser("scheduler", help="periodic reconciliation and polling (one active)")
    _metrics_flags(scheduler, "scheduler_port")
    scheduler.set_defaults(func=_scheduler)

    health = sub.add_parser(
        "health", help="probe: exit 0 when healthy (Redis, worker heartbeat, scheduler lease)"
    )
    health.add_argument(
        "--process",
        choices=["worker", "scheduler", "web"],
        help="check for this process kind (worker: this host's heartbeat); default: all",
    )
    health.add_argument("--json", action="store_true")
    health.set_defaults(func=_health)

    top = sub.add_parser("top", help="live view: queues, rates, latency, limits, accounts, errors")
    top.add_argument("--interval", type=float, default=2.0, help="seconds between frames")
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.add_argument(
        "--metrics",
        action="append",
        help="a worker's /metrics URL for rates and latency (repeatable; "
        "default: http://[metrics] host:worker_port/metrics)",
    )
    top.set_defaults(func=_top)

    check = sub.add_parser("check-config", help="validate the configuration and exit")
    check.set_defaults(func=_check_config)

    demo = sub.add_parser("demo", help="run smsq end to end on embedded Redis and the sandboxes")
    demo.add_argument("--bulk", type=int, default=1000, help="recipients of the sample bulk job")
    demo.add_argument("--otp", type=int, default=5, help="OTP jobs")
    demo.add_argument("--processes", type=int, default=1)
    demo.set_defaults(func=_demo)

    dev = sub.add_parser(
        "dev",
        help="embedded Redis and sandboxes for the Procfile's processes (honcho start)",
    )
    dev.set_defaults(func=_dev)
    return parser


def redis_problem(exc: BaseException) -> str:
    """One line saying what went wrong with Redis (never a password: URLs are not quoted)."""
    if isinstance(exc, redis.AuthenticationError | redis.AuthenticationWrongNumberOfArgsError):
        return "Redis refused the credentials (check the password in redis.url / REDIS_URL)"
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
        return f"Redis unreachable: {first}"
    return f"Redis error ({type(exc).__name__}): {first}"


# Commands that take `smsq dev`'s embedded Redis and config when neither SMSQ_CONFIG nor
# REDIS_URL is set (every one but those that start their own).
NOT_EMBEDDED = {"demo", "sandbox", "dev"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    name = f"smsq {args.command}"
    try:
        if args.command not in NOT_EMBEDDED:
            from worker.devtools.dev import use_embedded

            use_embedded(args.command, args)
        return int(args.func(args))
    except ConfigError as exc:
        if len(exc.problems) == 1:
            print(f"{name}: invalid configuration: {exc.problems[0]}", file=sys.stderr)
        else:
            print(exc, file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return exc.status
    except redis.RedisError as exc:
        print(f"{name}: {redis_problem(exc)}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
