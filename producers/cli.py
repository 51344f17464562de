"""``smsq send``, ``smsq hlr`` and ``smsq status``: producer-side commands (Redis only)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from producers.client import JobStatus, SmsqClient
from producers.contract import JobRejected


def _recipients(args: argparse.Namespace) -> list[str]:
    numbers: list[str] = list(args.to or [])
    if args.file:
        with open(args.file, encoding="utf-8") if args.file != "-" else sys.stdin as fh:
            numbers.extend(line.strip() for line in fh if line.strip() and not line.startswith("#"))
    return numbers


def add_producer_commands(
    sub: Any, client_factory: Callable[[argparse.Namespace], SmsqClient]
) -> None:
    """Register send / hlr / status on an argparse subparsers object."""
    send = sub.add_parser("send", help="enqueue a send job")
    send.add_argument("--provider", required=True, help="route, account name or provider kind")
    send.add_argument("--sender", required=True)
    send.add_argument("--text", required=True)
    send.add_argument("--to", action="append", help="a recipient (repeatable)")
    send.add_argument("--file", help="file with one recipient per line ('-' for stdin)")
    send.add_argument("--job-id")
    send.add_argument("--priority", choices=["bulk", "otp"], default="bulk")
    send.add_argument("--scheduled-at", help="ISO 8601 with offset, e.g. 2026-12-01T09:00:00+00:00")
    send.add_argument("--validity", type=int, help="seconds")
    send.add_argument("--metadata", help="JSON object")
    send.set_defaults(func=lambda a: _send(a, client_factory(a)))

    hlr = sub.add_parser("hlr", help="enqueue an HLR lookup job")
    hlr.add_argument("--provider", required=True)
    hlr.add_argument("--to", action="append")
    hlr.add_argument("--file")
    hlr.add_argument("--job-id")
    hlr.add_argument("--priority", choices=["bulk", "otp"], default="bulk")
    hlr.set_defaults(func=lambda a: _hlr(a, client_factory(a)))

    status = sub.add_parser("status", help="a job's per-status counts and recipients")
    status.add_argument("job_id")
    status.add_argument("--show-numbers", action="store_true", help="print numbers unmasked")
    status.add_argument("--limit", type=int, default=20, help="recipient rows to print (0: none)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=lambda a: _status(a, client_factory(a)))


def _enqueue(fn: Callable[[], str]) -> int:
    try:
        job_id = fn()
    except JobRejected as exc:
        print("job rejected:", file=sys.stderr)
        for reason in exc.reasons:
            print(f"  - {reason}", file=sys.stderr)
        return 2
    print(job_id)
    return 0


def _send(args: argparse.Namespace, client: SmsqClient) -> int:
    metadata = json.loads(args.metadata) if args.metadata else None
    return _enqueue(
        lambda: client.enqueue_send(
            provider=args.provider,
            sender=args.sender,
            text=args.text,
            recipients=_recipients(args),
            job_id=args.job_id,
            priority=args.priority,
            scheduled_at=args.scheduled_at,
            validity=args.validity,
            metadata=metadata,
        )
    )


def _hlr(args: argparse.Namespace, client: SmsqClient) -> int:
    return _enqueue(
        lambda: client.enqueue_hlr(
            provider=args.provider,
            recipients=_recipients(args),
            job_id=args.job_id,
            priority=args.priority,
        )
    )


def format_status(status: JobStatus, *, show_numbers: bool = False, limit: int = 20) -> str:
    lines = [f"job {status.job_id}: {status.state}"]
    rec = status.record
    if rec.get("provider"):
        lines.append(
            f"  provider {rec.get('provider')} via {rec.get('accounts', '?')}; "
            f"{rec.get('valid', '?')} valid of {rec.get('recipients', '?')} recipients, "
            f"{rec.get('duplicates', 0)} duplicates dropped; chunks {rec.get('chunks_done', 0)}/{rec.get('chunks', '?')}"
        )
    for reason in status.reasons:
        lines.append(f"  reason: {reason}")
    if status.counts:
        width = max(len(k) for k in status.counts)
        lines.append("  recipients by status:")
        for name, n in sorted(status.counts.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {name:<{width}}  {n}")
    if status.recipients and limit:
        lines.append("  recipients:")
        for row in status.recipients[:limit]:
            shown = row if show_numbers else row.masked()
            extra = " ".join(
                f"{k}={v}"
                for k, v in (
                    ("id", shown.provider_message_id),
                    ("parts", shown.parts),
                    ("cost", shown.cost),
                    ("code", shown.code),
                    ("reason", shown.reason),
                )
                if v is not None
            )
            lines.append(f"    {shown.phone:<16} {shown.status:<13} {extra}")
        more = sum(status.counts.values()) - min(limit, len(status.recipients))
        if more > 0:
            lines.append(f"    ... {more} more (--limit N)")
    return "\n".join(lines)


def _status(args: argparse.Namespace, client: SmsqClient) -> int:
    status = client.status(
        args.job_id, recipients=args.limit > 0 or args.json, limit=args.limit or None
    )
    if status is None:
        print(f"no job {args.job_id!r} in {os.environ.get('REDIS_URL', 'Redis')}", file=sys.stderr)
        return 1
    if args.json:
        rows = [r if args.show_numbers else r.masked() for r in status.recipients]
        print(
            json.dumps(
                {
                    "job_id": status.job_id,
                    "state": status.state,
                    "record": dict(status.record),
                    "counts": dict(status.counts),
                    "recipients": [r.__dict__ for r in rows],
                },
                indent=2,
            )
        )
    else:
        print(format_status(status, show_numbers=args.show_numbers, limit=args.limit))
    return 0
