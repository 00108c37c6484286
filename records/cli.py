"""``huizhen audit …``: check the audit log's chain, read it.

Like ``huizhen recording``, these work on the service's database directly (run them where the
service's configuration is); they need no running service. ``verify`` exits 1 on a problem.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from huizhen.config import audit_keys, load_settings
from huizhen.remote import CliError

if TYPE_CHECKING:
    from records.audit import AuditLog
    from rooms.db import Database


async def _open(args: argparse.Namespace) -> tuple[Database, AuditLog]:
    from records.audit import AuditLog
    from rooms.db import Database

    settings = load_settings(Path(args.config) if args.config else None)
    keys, active = audit_keys(settings)
    db = await Database.open(settings.database_url)
    return db, AuditLog(db, keys, active)


async def cmd_verify(args: argparse.Namespace) -> None:
    db, log = await _open(args)
    try:
        count, problems = await log.verify()
    finally:
        await db.close()
    for problem in problems:
        print(f"  {problem}")
    if problems:
        raise CliError(f"the audit log failed verification: {len(problems)} problem(s) in "
                       f"{count} rows")
    print(f"audit log: ok ({count} rows, chain and head intact)")


async def cmd_list(args: argparse.Namespace) -> None:
    db, log = await _open(args)
    try:
        entries = await log.entries(patient_ref=args.patient, encounter_id=args.encounter,
                                    actor=args.actor, after_seq=args.after, limit=args.limit)
    finally:
        await db.close()
    if args.json:
        print(json.dumps([e.as_dict() for e in entries], indent=2, ensure_ascii=False))
        return
    for e in entries:
        what = f"{e.entity_type} {e.entity_id or ''}".strip()
        print(f"{e.seq:>7}  {e.at:%Y-%m-%d %H:%M:%S}  {e.actor} ({e.role})  {e.action}  {what}"
              f"  {e.outcome}" + (f"  patient {e.patient_ref}" if e.patient_ref else "")
              + (f"  from {e.address}" if e.address else "")
              + (f"  reason: {e.reason}" if e.reason else ""))


def add_parser(sub: Any) -> None:
    audit = sub.add_parser("audit", help="the audit log: verify its chain, read it")
    asub = audit.add_subparsers(dest="audit_cmd", required=True)
    check = asub.add_parser("verify", help="find edited, inserted or deleted rows (exit 1)")
    check.set_defaults(func=cmd_verify, is_async=True)
    listing = asub.add_parser("list", help="rows, oldest first")
    listing.add_argument("--patient", help="only this patient's (a patient reference)")
    listing.add_argument("--encounter", help="only this encounter's")
    listing.add_argument("--actor", help="only what this person or system did")
    listing.add_argument("--after", type=int, default=0, help="rows after this number")
    listing.add_argument("--limit", type=int, default=1000)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list, is_async=True)
