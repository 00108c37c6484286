"""``huizhen audit …``: check the audit log's chain, read it; ``huizhen retention purge`` (every
artifact class: records/retention.py);
``huizhen document verify|export``: check a signed clinical document (records/signing.py).

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


_CLASS_NAMES = {"recording": "recordings", "document": "documents",
                "case_image": "case images"}


def _due_line(d: Any, state: str) -> str:
    """One due item for people; a recording's line is as it always was."""
    if d.cls == "recording":
        return (f"  {d.recording_id}  ended {d.ended_at:%Y-%m-%d}  {d.age_days:7.1f} days  "
                f"{d.files} files {d.size} bytes  {state}")
    if d.cls == "document":
        return (f"  {d.series_id}  {d.kind}  last {d.last_at:%Y-%m-%d}  {d.age_days:7.1f} days"
                f"  {len(d.versions)} version(s), {d.signed} signed, {d.size} bytes  {state}")
    return (f"  {d.image_id}  {d.kind}  uploaded {d.uploaded_at:%Y-%m-%d}  "
            f"{d.age_days:7.1f} days  {d.size} bytes  {state}")


async def cmd_purge(args: argparse.Namespace) -> None:
    from caseimages.db import ImageDb
    from recording.db import RecordingDb
    from recording.storage import open_storage
    from records.documents import DocumentDb
    from records.encounters import EncounterDb
    from records.retention import CLASSES, Retention

    settings = load_settings(Path(args.config) if args.config else None)
    db, log = await _open(args)
    storage = open_storage(settings)
    periods = settings.records.retention
    try:
        retention = Retention(EncounterDb(db), RecordingDb(db), storage,
                              settings.recordings_folder, log, periods.recordings_days,
                              documents=DocumentDb(db), images=ImageDb(db),
                              documents_days=periods.documents_days)
        due = await retention.due()
        deleted = [] if args.dry_run else await retention.purge("cli:retention")
    finally:
        await storage.close()
        await db.close()
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "due": [d.as_dict() for d in due],
                          "deleted": [d.id for d in deleted]},
                         indent=2, ensure_ascii=False))
        return
    gone = {(d.cls, d.id) for d in deleted}
    for cls in CLASSES:
        mine = [d for d in due if d.cls == cls]
        if cls != "recording" and not mine:
            continue  # the recordings' summary line is always there, as it always was
        print(f"{_CLASS_NAMES[cls]} past {retention.days(cls)} days: {len(mine)} "
              f"({sum(1 for d in mine if d.held)} kept by a legal hold)")
        for d in mine:
            state = ("held: " + (d.hold_reason or "") if d.held else
                     "would be deleted" if args.dry_run else
                     "deleted" if (cls, d.id) in gone else "kept: changed meanwhile")
            print(_due_line(d, state))
    if not args.dry_run:
        counts = {cls: sum(1 for d in deleted if d.cls == cls) for cls in CLASSES}
        print(f"deleted {counts['recording']} recording(s), {counts['document']} document(s),"
              f" {counts['case_image']} case image(s); each deletion is in the audit log")


async def _stored_document(args: argparse.Namespace, document_id: str) -> tuple[bytes, str]:
    from records.documents import DocumentDb
    from rooms.db import Database

    settings = load_settings(Path(args.config) if args.config else None)
    db = await Database.open(settings.database_url)
    try:
        document = await DocumentDb(db).get(document_id)
    finally:
        await db.close()
    if document is None:
        raise CliError(f"no document {document_id!r} in the database")
    if document.purged_at is not None:
        raise CliError(document.gone())
    if document.signature is None:
        raise CliError(f"document {document_id} (version {document.version}) is not signed")
    return document.content, document.signature


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read the {what} {path}: {exc.strerror}") from exc


async def cmd_document_verify(args: argparse.Namespace) -> None:
    from records.signing import SigningError, key_store, load_certificates, verify

    if args.id:
        content, signature = await _stored_document(args, args.id)
    elif args.document and args.signature:
        content = _read(args.document, "document")
        signature = _read(args.signature, "signature").decode("ascii", "replace")
    else:
        raise CliError("give --id DOCUMENT_ID, or --document FILE and --signature FILE")
    try:
        if args.ca:
            anchors = load_certificates(_read(args.ca, "CA certificate file"))
        else:
            anchors = key_store(load_settings(Path(args.config) if args.config else None)
                                ).anchors
        checked = verify(content, signature, anchors)
    except SigningError as exc:
        if args.json:
            print(json.dumps({"valid": False, "code": exc.code, "message": exc.message}))
        raise CliError(f"document verification FAILED ({exc.code}): {exc.message}") from exc
    if args.json:
        print(json.dumps({"valid": True, **checked.as_dict()}, ensure_ascii=False))
        return
    print(f"signature: ok — the document is unchanged since it was signed by "
          f"{checked.subject} at {checked.signed_at.isoformat()} (certificate "
          f"{checked.serial} from {checked.issuer}, valid then, chains to a trusted CA)")


def _write_export(out: Path, name: str, content: bytes, signature: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_bytes(content)
    (out / f"{name}.jws").write_text(signature + "\n", encoding="ascii")
    return out


async def cmd_document_export(args: argparse.Namespace) -> None:
    content, signature = await _stored_document(args, args.id)
    out = _write_export(Path(args.out), args.id, content, signature)
    print(f"wrote {out / (args.id + '.json')} (the signed bytes) and "
          f"{out / (args.id + '.jws')} (the detached signature)")


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

    retention = sub.add_parser("retention", help="delete what is past its retention period")
    rsub = retention.add_subparsers(dest="retention_cmd", required=True)
    purge = rsub.add_parser("purge", help="delete recordings, documents and case images past "
                            "records.retention (not those on legal hold), from every storage;"
                            " each one audited")
    purge.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    purge.add_argument("--json", action="store_true")
    purge.set_defaults(func=cmd_purge, is_async=True)

    document = sub.add_parser("document", help="signed clinical documents: verify, export")
    dsub = document.add_subparsers(dest="document_cmd", required=True)
    dverify = dsub.add_parser("verify", help="check a signature, its certificate chain and "
                              "validity time (exit 1 when anything fails)")
    dverify.add_argument("--document", help="the document's exact bytes (from export)")
    dverify.add_argument("--signature", help="its detached JWS (from export)")
    dverify.add_argument("--id", help="a document version in the database, instead of files")
    dverify.add_argument("--ca", help="PEM file of trusted CA certificates (default: "
                         "records.signing.trust_anchors)")
    dverify.add_argument("--json", action="store_true")
    dverify.set_defaults(func=cmd_document_verify, is_async=True)
    export = dsub.add_parser("export", help="write a signed version and its signature to files")
    export.add_argument("id", help="the document version's id")
    export.add_argument("--out", default=".", help="folder to write to")
    export.set_defaults(func=cmd_document_export, is_async=True)
