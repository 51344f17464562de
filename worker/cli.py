"""The ``smsq`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from producers.cli import add_producer_commands
from producers.client import SmsqClient
from worker.config import ConfigError, load_settings
from worker.providers import known_kinds
from worker.providers.sandbox_kit import Fault, OutcomeMix


def _client(args: argparse.Namespace) -> SmsqClient:
    """A client on the configured Redis, validating providers against the config when there is one."""
    if os.environ.get("SMSQ_CONFIG"):
        settings = load_settings()
        return SmsqClient(
            settings.redis_url, prefix=settings.key_prefix, providers=settings.provider_names()
        )
    return SmsqClient(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))


def _worker(args: argparse.Namespace) -> int:
    import logging

    from worker.supervisor import Supervisor

    settings = load_settings()  # fail fast, with every problem listed, before starting any
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return Supervisor(args.processes, args.threads, args.queues, settings.worker).run()


def _sandbox(args: argparse.Namespace) -> int:
    from worker.sandboxes import run_forever

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
    from worker.web import main as web_main

    return web_main(host=args.host, port=args.port)


def _scheduler(args: argparse.Namespace) -> int:
    from worker.scheduler import main as scheduler_main

    return scheduler_main()


def _check_config(args: argparse.Namespace) -> int:
    settings = load_settings()
    print(f"configuration OK: {len(settings.accounts)} accounts, {len(settings.routes)} routes")
    for name, acc in settings.accounts.items():
        print(f"  {name}: {acc.kind} at {acc.base_url}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from worker.demo import run_demo

    return run_demo(bulk=args.bulk, otp=args.otp, workers=args.processes)


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

    web = sub.add_parser("web", help="serve provider pushes, health and the HTTP intake")
    web.add_argument("--host", help="default: [web] host")
    web.add_argument("--port", type=int, help="default: [web] port")
    web.set_defaults(func=_web)

    scheduler = sub.add_parser("scheduler", help="periodic reconciliation and polling (one active)")
    scheduler.set_defaults(func=_scheduler)

    check = sub.add_parser("check-config", help="validate the configuration and exit")
    check.set_defaults(func=_check_config)

    demo = sub.add_parser("demo", help="run smsq end to end on embedded Redis and the sandboxes")
    demo.add_argument("--bulk", type=int, default=1000, help="recipients of the sample bulk job")
    demo.add_argument("--otp", type=int, default=5, help="OTP jobs")
    demo.add_argument("--processes", type=int, default=1)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
