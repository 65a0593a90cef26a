"""`percept-curator`: the core from a terminal or a script. Settings come from the same places as the app.

Exit status: 0 when every item succeeded, 1 when some failed (each listed with its reason),
2 for configuration and usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .blobs import BlobFilter
from .config import ConfigError
from .errors import BlobError, CuratorError
from .exporting import FORMATS, ContainerDestination, FolderDestination, Include, container_destination
from .exports import AzureMLDatastore
from .memory import return_large_buffers_to_the_system
from .pipeline import CancelToken
from .private_files import create_private, replace_private
from .state import state_of_record
from .targets import DatasetTarget

if TYPE_CHECKING:
    from .review import Decision

EXIT_OK, EXIT_FAILURES, EXIT_CONFIG = 0, 1, 2


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-26") from None


def _add_filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters (on metadata, before anything is decrypted)")
    group.add_argument("--model", action="append", default=[], help="model name (repeatable)")
    group.add_argument("--version", action="append", default=[], dest="versions", help="model version (repeatable)")
    group.add_argument("--min-confidence", type=float)
    group.add_argument("--max-confidence", type=float)
    group.add_argument("--since", type=_date, help="captured on or after this date")
    group.add_argument("--until", type=_date, help="captured on or before this date")
    group.add_argument("--prefix", default="", help="blob name prefix")
    group.add_argument("--contains", default="", help="text in the blob name")


def _filter(args: argparse.Namespace) -> BlobFilter:
    return BlobFilter(
        model_names=tuple(args.model),
        model_versions=tuple(args.versions),
        min_confidence=args.min_confidence,
        max_confidence=args.max_confidence,
        captured_from=args.since,
        captured_to=args.until,
        name_prefix=args.prefix,
        name_contains=args.contains,
    )


def build_parser() -> argparse.ArgumentParser:
    # `--json` before or after the command: SUPPRESS as default, so a subcommand's parser that did not see it
    # does not overwrite what the main parser saw.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    parser = argparse.ArgumentParser(
        prog="percept-curator",
        description="Review, tag and push encrypted Azure Percept retraining data to Custom Vision.",
        parents=[common],
    )
    parser.add_argument("--actor", help="who to record in the ledger (default: the OS user)")
    parser.add_argument("--env-file", default=".env", help="a .env file to read settings from (default .env)")
    sub = parser.add_subparsers(dest="command", required=True)

    listing = sub.add_parser(
        "list", parents=[common], help="list retraining blobs with their metadata and review state"
    )
    _add_filters(listing)
    listing.add_argument("--limit", type=int, default=None, help="at most this many rows")

    decrypt = sub.add_parser(
        "decrypt", parents=[common], help="decrypt one blob to a file (the only command that writes plaintext)"
    )
    decrypt.add_argument("blob")
    decrypt.add_argument(
        "--out", required=True, type=Path, help="the file to create, private to you (mode 0600); never followed"
    )
    decrypt.add_argument("--force", action="store_true", help="replace an existing file (a new file, not written into)")

    push = sub.add_parser("push", parents=[common], help="push named blobs, tagged")
    push.add_argument("blobs", nargs="+", metavar="BLOB")
    push.add_argument("--tag", action="append", default=[], help="tag name (repeatable); none: untagged")
    push.add_argument(
        "--provenance",
        choices=("image", "batch"),
        default="image",
        help="image: each image carries its blob's provenance (one call each); batch: 64 per call",
    )

    untagged = sub.add_parser(
        "push-untagged", parents=[common], help="push every blob not yet in the project, untagged"
    )
    _add_filters(untagged)
    untagged.add_argument("--dry-run", action="store_true", help="count what would be pushed, push nothing")
    untagged.add_argument(
        "--deep",
        action="store_true",
        help="with a blob index, read every eligible blob's content in the dry run too (undecryptable, duplicates)",
    )
    untagged.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    untagged.add_argument(
        "--provenance",
        choices=("image", "batch"),
        default="image",
        help="image: each image carries its blob's provenance (one call each); batch: 64 per call",
    )

    reject = sub.add_parser("reject", parents=[common], help="reject blobs: push-untagged leaves them out (reversible)")
    reject.add_argument("blobs", nargs="+", metavar="BLOB")
    reject.add_argument("--reason", default="rejected by reviewer")
    restore = sub.add_parser("restore", parents=[common], help="undo a rejection")
    restore.add_argument("blobs", nargs="+", metavar="BLOB")

    sub.add_parser("status", parents=[common], help="the ledger's summary and the project's image counts")

    indexer = sub.add_parser(
        "index", parents=[common], help="build or repair the blob index: filters, counts and pages without listing"
    )
    indexer.add_argument("--restart", action="store_true", help="walk the container from its start, not a checkpoint")
    counter = sub.add_parser("count", parents=[common], help="how many blobs match the filters (from the blob index)")
    _add_filters(counter)

    train = sub.add_parser("train", parents=[common], help="start training the project")
    train.add_argument("--wait", action="store_true", help="wait until the iteration finishes")

    destination = argparse.ArgumentParser(add_help=False)
    destination.add_argument("--to", required=True, choices=FORMATS, dest="format")
    destination.add_argument("--out", type=Path, help="coco, yolo: a folder private to you (0700, files 0600)")
    destination.add_argument("--container", help="azureml: a container of the storage account (created when missing)")
    destination.add_argument("--prefix", default="", help="azureml: the path in the container the files go under")
    destination.add_argument("--datastore", help="azureml: the Azure ML datastore that serves the container")
    destination.add_argument("--validation", type=float, default=0.2, help="the fraction of frames for validation")
    exporter = sub.add_parser(
        "export",
        parents=[common, destination],
        help="write the project's reviewed frames as COCO or YOLO files, or for Azure ML (AutoML for images)",
    )
    exporter.add_argument(
        "--include",
        choices=[include.value for include in Include],
        default=Include.PUSHED.value,
        help="every frame pushed to the project (default), or only those tagged",
    )
    sub.add_parser(
        "migrate",
        parents=[common, destination],
        help="write every image of the Custom Vision project with its tags and boxes, as export does",
    )
    return parser


class _Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, document: Any, text: str) -> None:
        if self.as_json:
            print(json.dumps(document, indent=2, default=str))
        else:
            print(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = _Output(getattr(args, "json", False))
    try:
        from .curator import Curator

        curator = Curator(actor=args.actor, env_file=args.env_file)
        if args.command in ("push", "push-untagged"):
            return_large_buffers_to_the_system()  # bounds the peak of a long push (see memory.py)
        handler = {
            "list": _list,
            "decrypt": _decrypt,
            "push": _push,
            "push-untagged": _push_untagged,
            "reject": _reject,
            "restore": _restore,
            "status": _status,
            "train": _train,
            "export": _export,
            "migrate": _migrate,
            "index": _index,
            "count": _count,
        }[args.command]
        return handler(curator, args, out)
    except ConfigError as exc:
        _fail(out, exc, "configuration")
        return EXIT_CONFIG
    except CuratorError as exc:
        _fail(out, exc, exc.reason)
        return EXIT_FAILURES
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _fail(out: _Output, exc: CuratorError, kind: str) -> None:
    if out.as_json:
        print(json.dumps({"error": kind, "message": str(exc)}))
    else:
        print(f"percept-curator: {exc}", file=sys.stderr)


def _list(curator, args, out: _Output) -> int:
    rows = []
    blobs = []
    for blob in curator.blobs(_filter(args)):
        blobs.append(blob)
        if args.limit is not None and len(blobs) >= args.limit:
            break
    records = curator.ledger.records([b.key for b in blobs], curator.settings.custom_vision_project_id)
    for blob in blobs:
        record = records.get(blob.key)
        rows.append(
            {
                "name": blob.name,
                "model_name": blob.model_name,
                "model_version": blob.model_version,
                "confidence": blob.confidence,
                "captured_at": blob.captured_at.isoformat() if blob.captured_at else None,
                "size": blob.size,
                "state": state_of_record(record).value,
                "problems": list(blob.problems),
            }
        )
    lines = [f"{'name':40} {'model':16} {'version':8} {'conf':>5} {'captured':19} {'state':14}"]
    for row in rows:
        lines.append(
            f"{row['name'][:40]:40} {(row['model_name'] or '-')[:16]:16} {(row['model_version'] or '-')[:8]:8} "
            f"{'' if row['confidence'] is None else format(row['confidence'], 'g'):>5} "
            f"{(row['captured_at'] or '-')[:19]:19} {row['state']:14}"
        )
    lines.append(f"{len(rows)} blob(s)")
    out.emit(rows, "\n".join(lines))
    return EXIT_OK


def _decrypt(curator, args, out: _Output) -> int:
    target: Path = args.out
    # lexists: a symlink planted at the path counts as a file there, even one pointing nowhere.
    if os.path.lexists(target) and not args.force:
        raise ConfigError(f"{target} exists; pass --force to replace it.")
    plaintext = curator.decrypt(curator.blob(args.blob))
    try:
        if args.force:
            replace_private(target, plaintext)
        else:
            create_private(target, plaintext)
    except FileExistsError:
        raise ConfigError(f"{target} exists; pass --force to replace it.") from None
    except OSError as exc:
        raise ConfigError(f"Cannot write {target}: {exc.strerror or exc}.") from None
    out.emit(
        {"blob": args.blob, "out": str(target), "bytes": len(plaintext)},
        f"decrypted {args.blob} to {target} ({len(plaintext):,} bytes)",
    )
    return EXIT_OK


@contextmanager
def _progress_bar(out: _Output, total: int | None, description: str) -> Iterator[Callable[[Any], None] | None]:
    """A tqdm bar on a terminal (none for --json or a pipe): the progress callback to give the run, or None."""
    if out.as_json or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, unit="img", desc=description, file=sys.stderr)

    def update(progress) -> None:
        if bar.total is None and progress.total is not None:
            bar.total = progress.total
        bar.update(progress.done - bar.n)
        bar.set_postfix({k: v for k, v in progress.counts.items() if v}, refresh=False)

    try:
        yield update
    finally:
        bar.close()


def _report(out: _Output, report, heading: str) -> int:
    counts = {str(k): v for k, v in report.counts.items()}
    failures = report.failed
    lines = [f"{heading}: " + (", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "nothing to do")]
    lines.append(
        f"{report.seconds:.1f} s, {report.images_per_second:.1f} images/s, {report.calls} Custom Vision "
        f"call(s), {report.throttled} throttled and retried"
    )
    for item in failures:
        lines.append(f"  {item.outcome}: {item.name}: {item.reason}")
    if report.cancelled:
        lines.append("cancelled: what did not go stays eligible for the next run")
    document = {
        "counts": counts,
        "seconds": report.seconds,
        "calls": report.calls,
        "throttled": report.throttled,
        "cancelled": report.cancelled,
        "outcomes": report.rows(),
    }
    out.emit(document, "\n".join(lines))
    return EXIT_OK if report.ok else EXIT_FAILURES


def _push(curator, args, out: _Output) -> int:
    blobs = [curator.blob(name) for name in args.blobs]
    with _progress_bar(out, len(blobs), "push") as update:
        report = curator.push(blobs, tags=args.tag, provenance=args.provenance, progress=update)
    return _report(out, report, "push")


def _push_untagged(curator, args, out: _Output) -> int:
    blob_filter = _filter(args)
    if args.dry_run or not args.yes:
        dry = curator.push_all_untagged(blob_filter, dry_run=True, deep=True if args.deep else None)
        document = dry.as_dict()
        lines = [
            f"eligible: {dry.eligible} new image(s) of {dry.listed} listed",
            f"already pushed: {dry.already_pushed}, rejected: {dry.rejected}, near-duplicates: {dry.near_duplicates}, "
            f"duplicates by content: {dry.duplicates_by_content}, undecryptable: {sum(dry.undecryptable.values())}",
        ]
        lines += [f"  undecryptable, {reason}: {n}" for reason, n in sorted(dry.undecryptable.items())]
        if dry.stale:
            lines.append(f"changed since listed: {dry.stale} (run it again to see their new versions)")
        if dry.unchecked:
            lines.append(
                f"contents not read: {dry.unchecked} of the eligible (from the blob index; the push checks them, "
                "--deep reads them now)"
            )
        lines += [f"  {version}: {n}" for version, n in sorted(dry.eligible_by_version.items())]
        if dry.headroom is not None:
            lines.append(f"project: {dry.project_images} image(s), room for {dry.headroom} more")
        if args.dry_run:
            out.emit(document, "\n".join(lines))
            return EXIT_OK
        print("\n".join(lines), file=sys.stderr)
        if not sys.stdin.isatty():
            raise ConfigError("Refusing to push without confirmation; pass --yes (or --dry-run).")
        answer = input(f"Push {dry.eligible} image(s) untagged to the project? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing pushed", file=sys.stderr)
            return EXIT_OK
    with _progress_bar(out, None, "push-untagged") as update:
        report = curator.push_all_untagged(blob_filter, provenance=args.provenance, progress=update)
    return _report(out, report, "push-untagged")


def _reject(curator, args, out: _Output) -> int:
    from . import review

    return _decide(
        curator, args, out, review.Decision.REJECTED, lambda blobs: review.reject(curator, blobs, reason=args.reason)
    )


def _restore(curator, args, out: _Output) -> int:
    from . import review

    return _decide(curator, args, out, review.Decision.RESTORED, lambda blobs: review.restore(curator, blobs))


def _decide(curator, args, out: _Output, done: Decision, decide: Callable[[list[Any]], list[Any]]) -> int:
    """Reject or restore by name with the app's rules (percept_core.review); each item refused is listed with why."""
    from .review import Decision, ReviewOutcome, outcome_counts

    blobs, outcomes = [], []
    for name in dict.fromkeys(args.blobs):
        try:
            blobs.append(curator.blob(name))
        except BlobError as exc:  # this name, not the whole command
            outcomes.append(ReviewOutcome(name, "", Decision.SKIPPED, exc.message))
    outcomes += decide(blobs) if blobs else []
    ok = [o.name for o in outcomes if o.ok]
    refused = [o for o in outcomes if not o.ok]
    counts = outcome_counts(outcomes)
    lines = [
        f"{done} {len(ok)} blob(s)" + (": push-untagged leaves them out" if done is Decision.REJECTED and ok else "")
    ]
    lines += [f"  {o.outcome}: {o.name}: {o.reason}" for o in refused]
    document = {
        str(done): ok,
        "counts": counts,
        "outcomes": [{"blob": o.name, "outcome": o.outcome, "reason": o.reason} for o in outcomes],
    }
    out.emit(document, "\n".join(lines))
    return EXIT_FAILURES if refused else EXIT_OK


def _status(curator, args, out: _Output) -> int:
    summary = curator.status()
    document: dict[str, Any] = {"ledger": summary, "ledger_path": curator.ledger.location}
    lines = [f"ledger {curator.ledger.location}:"] + [f"  {k}: {v}" for k, v in sorted(summary.items())]
    if curator.settings.custom_vision_project_id:
        project = curator.project()
        tagged, untagged = curator.customvision.image_counts()
        document["project"] = {
            "id": project.id,
            "name": project.name,
            "kind": project.kind,
            "tagged": tagged,
            "untagged": untagged,
        }
        lines.append(f"project {project.name} ({project.kind}): {tagged} tagged, {untagged} untagged")
    out.emit(document, "\n".join(lines))
    return EXIT_OK


def _train(curator, args, out: _Output) -> int:
    iteration = curator.train(wait=args.wait)
    document = {
        "iteration": iteration.id,
        "name": iteration.name,
        "status": iteration.status,
        "trained_at": iteration.trained_at,
    }
    out.emit(document, f"iteration {iteration.name}: {iteration.status}")
    return EXIT_OK if iteration.status != "Failed" else EXIT_FAILURES


def _index(curator, args, out: _Output) -> int:
    with _progress_bar(out, None, "index") as update:
        report = curator.sync_index(restart=args.restart, progress=update)
    text = (
        f"indexed {report.listed:,} blobs in {report.seconds:.1f} s ({report.blobs_per_second:,.0f} blobs/s): "
        f"{report.added:,} added, {report.changed:,} changed, {report.removed:,} removed"
        + (" (resumed)" if report.resumed else "")
    )
    out.emit(report.to_json(), text)
    return EXIT_OK


def _count(curator, args, out: _Output) -> int:
    blob_filter = _filter(args)
    count = curator.count(blob_filter)
    source = "index"
    if count is None:  # no index: the listing counts, reading the whole container
        count, source = sum(1 for _ in curator.blobs(blob_filter)), "listing"
    out.emit({"count": count, "from": source}, f"{count:,} blob(s) (from the {source})")
    return EXIT_OK


def _export(curator, args, out: _Output) -> int:
    return _write_dataset(curator, args, out, migrate=False)


def _migrate(curator, args, out: _Output) -> int:
    return _write_dataset(curator, args, out, migrate=True)


def _write_dataset(curator, args, out: _Output, *, migrate: bool) -> int:
    """The reviewed frames (or, migrating, the Custom Vision project's images) as the dataset `--to` names."""
    destination, datastore = _destination(curator, args)
    target = DatasetTarget(
        curator,
        destination,
        args.format,
        getattr(args, "include", Include.PUSHED),
        args.validation,
        datastore,
        migrate=migrate,
    )
    with _progress_bar(out, None, "migrate" if migrate else "export") as update:
        summary = target.run(update, CancelToken())
    return _exported(out, summary)


def _destination(curator, args) -> tuple[FolderDestination | ContainerDestination, AzureMLDatastore | None]:
    datastore = None
    if args.format == "azureml":
        if not args.container or not args.datastore:
            raise ConfigError("An Azure ML export needs --container and --datastore.")
        try:
            datastore = AzureMLDatastore(args.datastore)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        destination = container_destination(curator.settings, args.container, args.prefix)
    else:
        if args.out is None:
            raise ConfigError(f"A {args.format} export needs --out, a folder to write it to.")
        destination = FolderDestination(args.out)
    return destination, datastore


def _exported(out: _Output, summary) -> int:
    lines = [f"exported {summary.frames} frames to {summary.destination} ({summary.added} new)"]
    lines += [f"  {tag}: {count}" for tag, count in sorted(summary.per_tag.items())]
    lines += [f"  left out {item.frame_id}: {item.reason}" for item in summary.left_out]
    out.emit(summary.to_json(), "\n".join(lines))
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
