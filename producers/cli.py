"""``smsq send``, ``smsq hlr`` and ``smsq status``: producer-side commands (Redis only)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from producers.client import JobStatus, Overview, SmsqClient
from producers.contract import JobRejected
from producers.dead_letters import DeadLetter, DeadLetters, NotReplayable
from producers.phones import mask_numbers_in, mask_phone


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

    status = sub.add_parser(
        "status", help="a job's counts and recipients; without a job: queues, accounts, limits"
    )
    status.add_argument("job_id", nargs="?")
    status.add_argument("--show-numbers", action="store_true", help="print numbers unmasked")
    status.add_argument("--limit", type=int, default=20, help="recipient rows to print (0: none)")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=lambda a: _status(a, client_factory(a)))

    cancel = sub.add_parser(
        "cancel", help="cancel a job none of whose chunks was dispatched yet (a scheduled job)"
    )
    cancel.add_argument("job_id")
    cancel.set_defaults(func=lambda a: _cancel(a, client_factory(a)))

    dlq = sub.add_parser("dlq", help="dead letters: list, show, replay, purge")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    dl_list = dlq_sub.add_parser("list", help="newest first")
    dl_list.add_argument("--limit", type=int, default=50)
    dl_list.add_argument("--json", action="store_true")
    dl_list.add_argument("--show-numbers", action="store_true", help="print numbers unmasked")
    dl_show = dlq_sub.add_parser("show", help="one dead letter in full")
    dl_show.add_argument("--show-numbers", action="store_true", help="print numbers unmasked")
    dl_show.add_argument("id")
    dl_replay = dlq_sub.add_parser(
        "replay", help="put jobs back on the intake queue (validated again)"
    )
    dl_replay.add_argument("id", nargs="?")
    dl_replay.add_argument("--all", action="store_true")
    dl_purge = dlq_sub.add_parser("purge", help="delete dead letters")
    dl_purge.add_argument(
        "--older-than", type=float, help="only those older than this many seconds"
    )
    dlq.set_defaults(func=lambda a: _dlq(a, client_factory(a)))


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
    if status.costs:
        totals: dict[str, float] = {}
        for line in status.costs:
            totals[line.currency] = totals.get(line.currency, 0.0) + line.amount
        total = ", ".join(
            f"{amount:.2f} {cur or '(currency not given)'}"
            for cur, amount in sorted(totals.items())
        )
        lines.append(f"  cost: {total}")
        for line in status.costs:
            lines.append(f"    {line.account:<24} {line.amount:.2f} {line.currency}".rstrip())
    if status.recipients and limit:
        lines.append("  recipients:")
        for row in status.recipients[:limit]:
            shown = row if show_numbers else row.masked()
            extra = " ".join(
                f"{k}={v}"
                for k, v in (
                    ("id", shown.provider_message_id),
                    ("account", shown.account),
                    ("attempt", shown.attempt),
                    ("operator", shown.operator),
                    ("price", shown.price),
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
    if status.hlr and limit:
        lines.append("  hlr results:")
        for phone, result in list(status.hlr.items())[:limit]:
            number = phone if show_numbers else mask_phone(phone)
            if result.get("pending"):
                lines.append(f"    {number:<16} pending")
                continue
            facts = " ".join(
                f"{k}={result[k]}"
                for k in ("ok", "mcc", "mnc", "network", "ported", "roaming", "error")
                if result.get(k) is not None
            )
            lines.append(f"    {number:<16} {facts}")
    return "\n".join(lines)


def format_overview(overview: Overview) -> str:
    lines = ["queues:"]
    for name, depth in overview.queues.items():
        lines.append(f"  {name:<28} {depth}")
    lines.append("accounts:")
    if not overview.accounts:
        lines.append("  (none paused so far)")
    for acc in overview.accounts:
        extra = ""
        if acc.state == "paused":
            due = max(0.0, (acc.probe_at or 0) - time.time())
            extra = f"  {acc.reason}; next probe in {due:.0f}s"
        lines.append(f"  {acc.name:<28} {acc.state}{extra}")
    lines.append("rate limits (permits in the current window):")
    if not overview.limiters:
        lines.append("  (no limited requests yet)")
    for lim in overview.limiters:
        paused = f"  paused {lim.paused_for:.1f}s by the provider" if lim.paused_for else ""
        lines.append(f"  {lim.account + ' ' + lim.endpoint:<28} {lim.recent}{paused}")
    lines.append(f"dead letters: {overview.dead_letters}")
    return "\n".join(lines)


def _status(args: argparse.Namespace, client: SmsqClient) -> int:
    if args.job_id is None:
        overview = client.overview()
        if args.json:
            print(json.dumps(dataclasses.asdict(overview), indent=2))
        else:
            print(format_overview(overview))
        return 0
    try:
        status = client.status(
            args.job_id, recipients=args.limit > 0 or args.json, limit=args.limit or None
        )
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if status is None:
        print(f"no job {args.job_id!r} in this Redis", file=sys.stderr)
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
                    "costs": [dataclasses.asdict(c) for c in status.costs],
                    "recipients": [r.__dict__ for r in rows],
                },
                indent=2,
            )
        )
    else:
        print(format_status(status, show_numbers=args.show_numbers, limit=args.limit))
    return 0


def _cancel(args: argparse.Namespace, client: SmsqClient) -> int:
    result = client.cancel(args.job_id)
    if result.cancelled:
        print(f"job {args.job_id}: cancelled ({result.recipients} recipients)")
        return 0
    explain = {
        "dispatching": "a worker has already taken some of its chunks; nothing was cancelled",
        "pending": "no worker has taken it yet; try again in a moment",
        "not_found": "no such job in this Redis",
    }
    reason = explain.get(result.result, f"it is {result.result}")
    print(f"job {args.job_id} not cancelled: {reason}", file=sys.stderr)
    return 1


def _letter_line(dl: DeadLetter) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(dl.at))
    reason = "; ".join(dl.reasons)
    return f"{dl.id}  {when}Z  {dl.source:<20} {dl.job_id or '-':<24} {reason[:100]}"


def _shown(text: str, show_numbers: bool) -> str:
    """Dead-letter text for the terminal: numbers masked unless asked, and any character a
    terminal cannot take (a producer's unpaired surrogate) written as an escape."""
    if not show_numbers:
        text = mask_numbers_in(text)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _dlq(args: argparse.Namespace, client: SmsqClient) -> int:
    letters = DeadLetters(client.redis, client.keys, client.namespace)
    if args.dlq_command == "list":
        items = letters.list(limit=args.limit)
        if args.json:
            text = json.dumps([dataclasses.asdict(d) for d in items], indent=2)
            print(_shown(text, args.show_numbers))
        else:
            print(f"{letters.count()} dead letters" + (f", newest {len(items)}:" if items else ""))
            for dl in items:
                print("  " + _shown(_letter_line(dl), args.show_numbers))
        return 0
    if args.dlq_command == "show":
        letter = letters.get(args.id)
        if letter is None:
            print(f"no dead letter {args.id!r}", file=sys.stderr)
            return 1
        text = json.dumps(dataclasses.asdict(letter), indent=2, ensure_ascii=False)
        print(_shown(text, args.show_numbers))
        return 0
    if args.dlq_command == "replay":
        if bool(args.id) == bool(args.all):
            print("give one dead-letter id, or --all", file=sys.stderr)
            return 2
        targets = [d.id for d in letters.iter_all()] if args.all else [args.id]
        failures = 0
        for letter_id in targets:
            try:
                job_id = letters.replay(letter_id)
                print(f"replayed {letter_id} as job {job_id or '(new id)'}")
            except KeyError:
                print(f"no dead letter {letter_id!r}", file=sys.stderr)
                failures += 1
            except NotReplayable as exc:
                print(f"cannot replay {letter_id}: {exc}", file=sys.stderr)
                failures += 1
        return 1 if failures else 0
    removed = letters.purge(time.time() - args.older_than if args.older_than is not None else None)
    print(f"purged {removed} dead letters")
    return 0
