"""Export a project's reviewed frames as dataset files, without Custom Vision in the loop for the images.

The frames are the blobs the ledger records as pushed to the current project (`Include.PUSHED`), or only
those with tags (`Include.TAGGED`); rejected and undecryptable frames never. Their tags come from the
ledger, and so do a detection project's boxes where the reviewer saved them through `boxes.save_boxes` (the
project's images give the others). Each image is decrypted in memory and written as the device encrypted it
(no re-encoding), through a destination:

- `FolderDestination`: a local folder the user named (COCO, YOLO, or the AutoML files), created 0700 with
  files 0600, refused inside this repository's checkout;
- `ContainerDestination`: a blob container (under a prefix) that an Azure ML datastore serves (AutoML);
- `ArchiveDestination`: a zip archive built in memory, for the app to hand to the reviewer's browser (a
  server's disk never holds a decrypted frame); each archive is a whole export.

An export is resumable and idempotent: `manifest.json` at its root lists every frame written (file, size,
side of the split), a run adds only frames not listed there (their sides never move, see
`exports.split_frames`) and rewrites the annotation files; the ledger's audit trail gets one `export` event
naming the destination, the counts and the SHA-256 of the manifest it wrote.

An export runs like a push: it reports `ExportProgress` as it goes and stops on the pipeline's `CancelToken`
(so the app runs it in the background as it runs push all untagged, `jobs.PushJobs`). Cancelled, it reads no
further frame and writes no further image; what it wrote is in its annotation files and manifest, so the export
is complete for those frames and the next run adds the rest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.blob import ContainerClient
from PIL import Image, UnidentifiedImageError

from .blobs import RetrainingBlob, blob_service, map_bounded, storage_error, url_without_query
from .boxes import Box
from .errors import ConfigError, CuratorError, ExportError
from .exports import (
    AzureMLDatastore,
    ExportLayout,
    ExportTask,
    FrameSplit,
    LabelledFrame,
    LeftOut,
    Split,
    automl_export,
    automl_image_path,
    coco_export,
    export_file_name,
    exportable,
    frame_id_of,
    is_safe_file_name,
    safe_stem,
    split_frames,
    task_of_project,
    yolo_export,
)
from .pipeline import CancelToken
from .private_files import replace_private
from .state import BlobState

FORMATS = ("coco", "yolo", "azureml")


class Include(StrEnum):
    """Which frames an export takes: every frame pushed to the project, or only those with labels."""

    PUSHED = BlobState.PUSHED.value
    TAGGED = "tagged"


MANIFEST = "manifest.json"
_REPOSITORY = Path(__file__).resolve().parents[1]
_CHUNK = 256  # blobs whose ledger records (and project images) are read at once
WRITERS = 8  # frames fetched (downloaded, decrypted) and written at once
MAX_ARCHIVE_BYTES = 512 * 2**20  # an export the app hands over as one download, held in memory meanwhile


class Destination(Protocol):
    """Where an export's files go, by POSIX path relative to its root."""

    def describe(self) -> str: ...

    def read(self, path: str) -> bytes | None: ...

    def write(self, path: str, data: bytes) -> None: ...


class FolderDestination:
    """A local folder only the user can read: 0700, files 0600, never inside this repository's checkout."""

    def __init__(self, root: Path) -> None:
        root = Path(root).expanduser().resolve()
        if (_REPOSITORY / "pyproject.toml").exists() and root.is_relative_to(_REPOSITORY):
            raise ConfigError(
                f"{root} is inside the repository; decrypted frames never go there.", hint="Choose a folder elsewhere."
            )
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        self.root = root

    def describe(self) -> str:
        return str(self.root)

    def _path(self, path: str) -> Path:
        target = (self.root / path).resolve()
        if not target.is_relative_to(self.root):
            raise ConfigError(f"{path!r} leaves the export folder.")
        return target

    def read(self, path: str) -> bytes | None:
        target = self._path(path)
        return target.read_bytes() if target.is_file() else None

    def write(self, path: str, data: bytes) -> None:
        """A new private file moved into place (a symlink there is replaced, never followed); folders 0700."""
        target = self._path(path)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        for folder in [target.parent, *target.parent.parents]:
            if folder == self.root:
                break
            os.chmod(folder, 0o700)
        replace_private(target, data)


class ContainerDestination:
    """A prefix of a blob container, e.g. the one an Azure ML datastore serves."""

    def __init__(self, container: ContainerClient, prefix: str = "") -> None:
        self.container = container
        self.prefix = prefix.strip("/")

    def describe(self) -> str:
        """The container's URL and the prefix, never a SAS token the client's URL carries (it is a secret)."""
        return f"{url_without_query(self.container.url)}/{self.prefix}".rstrip("/")

    def _name(self, path: str) -> str:
        return f"{self.prefix}/{path}" if self.prefix else path

    def read(self, path: str) -> bytes | None:
        try:
            return self.container.download_blob(self._name(path)).readall()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise storage_error(exc, f"read {self._name(path)!r}") from None

    def write(self, path: str, data: bytes) -> None:
        try:
            self.container.upload_blob(self._name(path), data, overwrite=True)
        except AzureError as exc:
            raise storage_error(exc, f"write {self._name(path)!r}") from None


class ArchiveDestination:
    """A zip archive in memory, its files under one folder: an export handed over as one download.

    Nothing is read back (each archive is a whole export, nothing to resume) and the archive refuses to grow past
    `max_bytes`, so that one reviewer's download cannot take the server's memory.
    """

    def __init__(self, project_name: str, format: str, *, max_bytes: int = MAX_ARCHIVE_BYTES) -> None:
        self.name = f"{safe_stem(project_name) or 'project'}-{format}"
        self.max_bytes = max_bytes
        self._buffer = io.BytesIO()
        self._archive = zipfile.ZipFile(self._buffer, "w")
        self._lock = threading.Lock()
        self._too_large = False

    def describe(self) -> str:
        return f"{self.name}.zip"

    def read(self, path: str) -> bytes | None:
        return None

    def write(self, path: str, data: bytes) -> None:
        """Images stored as they are (a JPEG does not deflate), annotation files deflated."""
        compression = zipfile.ZIP_STORED if path.startswith("images/") else zipfile.ZIP_DEFLATED
        with self._lock:
            if self._too_large or self._buffer.tell() + len(data) > self.max_bytes:
                self._too_large = True
                self._archive.close()  # finished now, not by the garbage collector once its buffer may be gone
                raise ExportError(
                    f"The export is larger than a download may be ({self.max_bytes / 2**20:,.1f} MiB).",
                    hint="Export it for Azure ML, or to a folder with percept-curator export --out.",
                )
            self._archive.writestr(f"{self.name}/{path}", data, compress_type=compression)

    def archive(self) -> bytes:
        """The finished zip file."""
        with self._lock:
            self._archive.close()
            return self._buffer.getvalue()

    def __del__(self) -> None:  # an archive given up (an export that failed) closes before its buffer does
        self._archive.close()


@dataclass
class ExportSummary:
    """What an export holds after this run and what this run added."""

    format: str
    destination: str
    frames: int = 0
    added: int = 0
    per_tag: dict[str, int] = field(default_factory=dict)
    per_side: dict[str, int] = field(default_factory=dict)
    left_out: list[LeftOut] = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "destination": self.destination,
            "frames": self.frames,
            "added": self.added,
            "cancelled": self.cancelled,
            "seconds": round(self.seconds, 3),
            "per_tag": self.per_tag,
            "per_side": self.per_side,
            "left_out": [{"frame": item.frame_id, "reason": item.reason} for item in self.left_out],
        }


@dataclass
class ExportProgress:
    """How far an export is: frames read (sized, a new one fetched) of `total` when known, new images written."""

    done: int
    total: int | None
    written: int
    elapsed: float

    @property
    def counts(self) -> dict[str, int]:
        return {"written": self.written}

    @property
    def images_per_second(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0


def container_destination(settings: Any, container: str, prefix: str = "") -> ContainerDestination:
    """A container of the settings' storage account, created when missing."""
    client = blob_service(settings).get_container_client(container)
    try:
        if not client.exists():
            client.create_container()
    except AzureError as exc:
        raise storage_error(exc, f"create the container {container!r}") from None
    return ContainerDestination(client, prefix)


def export(
    curator: Any,
    destination: Destination,
    *,
    format: str,
    include: str = Include.PUSHED,
    validation_fraction: float = 0.2,
    datastore: AzureMLDatastore | None = None,
    progress: Callable[[ExportProgress], None] | None = None,
    cancel: CancelToken | None = None,
) -> ExportSummary:
    """Write the project's reviewed frames in `format` ("coco", "yolo" or "azureml") to `destination`."""
    if include not in tuple(Include):
        raise ConfigError(f"What to include is one of {', '.join(Include)}, not {include!r}.")
    project = curator.project()
    run = _Run(format, destination, validation_fraction, datastore, progress, cancel or CancelToken(), "ledger")
    run.total = curator.ledger.summary(project.id).get(BlobState.PUSHED, 0)
    return run.write(curator, project, _ledger_items(curator, include, project.is_detection))


def migrate(
    curator: Any,
    destination: Destination,
    *,
    format: str,
    validation_fraction: float = 0.2,
    datastore: AzureMLDatastore | None = None,
    progress: Callable[[ExportProgress], None] | None = None,
    cancel: CancelToken | None = None,
) -> ExportSummary:
    """Write every image of the Custom Vision project, with its tags and boxes as the project has them, in
    `format` to `destination`: a team's labelled history, out of Custom Vision (which retires in 2028)."""
    project = curator.project()
    run = _Run(format, destination, validation_fraction, datastore, progress, cancel or CancelToken(), "project")
    run.total = sum(curator.customvision.image_counts())
    return run.write(curator, project, _project_items(curator, project.id, project.is_detection))


@dataclass(frozen=True)
class _Item:
    """A frame to write: its id, the name its file name is made from, its labels, and how to get its bytes."""

    frame_id: str
    name: str
    tags: tuple[str, ...]
    boxes: tuple[Box, ...]
    model_name: str
    model_version: str
    fetch: Callable[[], bytes]


@dataclass
class _Run:
    """One export: what it writes where, how it reports, and what it has done so far."""

    format: str
    destination: Destination
    validation_fraction: float
    datastore: AzureMLDatastore | None
    on_progress: Callable[[ExportProgress], None] | None
    cancel: CancelToken
    source: str  # "ledger" (an export) or "project" (a migration)
    total: int | None = None
    read: int = 0
    written: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)

    def report(self) -> None:
        """Tell `on_progress` how far the run is (from the thread that called the export, as Streamlit needs)."""
        if self.on_progress is not None:
            elapsed = time.monotonic() - self.started
            self.on_progress(ExportProgress(self.read, self.total, len(self.written), elapsed))

    def items(self, items: Iterable[_Item], manifest: dict[str, dict[str, Any]]) -> Iterator[_Item]:
        """The items; once the run is cancelled, only those an earlier run wrote (read without a fetch, so that
        a cancelled run's annotation files still hold every frame exported before)."""
        for item in items:
            if self.cancel.cancelled:
                if not manifest:
                    return
                if item.frame_id not in manifest:
                    continue
            yield item

    def write(self, curator: Any, project: Any, items: Iterable[_Item]) -> ExportSummary:
        """The export itself: frames sized (a new one's bytes fetched), split, written; the manifest last.

        An Azure ML export writes a new frame's image as soon as it is fetched (its path does not depend on the
        split). COCO and YOLO put images under their side, known only once every frame is sized, so a new
        frame's bytes are fetched again to be written rather than held: an export of thousands of frames holds a
        few frames at a time.
        """
        if self.format not in FORMATS:
            raise ConfigError(f"The export format is one of {', '.join(FORMATS)}, not {self.format!r}.")
        task = task_of_project(project.kind, project.classification_type)
        if self.format == "yolo" and task is not ExportTask.OBJECT_DETECTION:
            raise ConfigError(
                "YOLO label files hold boxes: this project classifies whole images.",
                hint="Export it as COCO or for Azure ML, or export a detection project as YOLO.",
            )
        destination = self.destination
        manifest = _read_manifest(destination, self.format, project.id, self.source)
        summary = ExportSummary(self.format, destination.describe())

        def write_image(frame: LabelledFrame, data: bytes) -> None:  # AutoML: one path for an image, either side
            if exportable([frame], task)[0]:
                destination.write(automl_image_path(frame.file_name), data)
                self.written.add(frame.frame_id)

        frames, fetch = self._frames(
            items, manifest, summary.left_out, write_image if self.format == "azureml" else None
        )
        kept, refused = exportable(frames, task)
        summary.left_out += refused
        previous = {frame_id: Split(entry["side"]) for frame_id, entry in manifest.items()}
        try:
            split = split_frames(kept, self.validation_fraction, previous=previous)
            layout = self._layout(split, task)
        except ValueError as exc:  # what the format cannot hold: a tag name, two frames of one file name
            raise ExportError(str(exc)) from None
        new = [frame for frame in [*split.train, *split.validation] if frame.frame_id not in manifest]
        late = [frame for frame in new if frame.frame_id not in self.written]

        def write_late(frame: LabelledFrame) -> None:
            if not self.cancel.cancelled:
                destination.write(layout.image_paths[frame.frame_id], fetch[frame.frame_id]())
                self.written.add(frame.frame_id)

        for _, failed in map_bounded(write_late, late, max_concurrency=WRITERS):
            if failed is not None:  # a destination that cannot be written: the export stops, its manifest unchanged
                raise failed
            self.report()
        summary.cancelled = self.cancel.cancelled
        if summary.cancelled:  # what was written is exported, the rest is for the next run
            split = FrameSplit(
                *(tuple(f for f in frames if self._holds(f, manifest)) for frames in (split.train, split.validation))
            )
            layout = self._layout(split, task)
        summary.added = len([frame for frame in new if frame.frame_id in self.written])
        for path, data in layout.files.items():
            destination.write(path, data)
        sides = split.sides()
        exported = [*split.train, *split.validation]
        entries = {
            frame.frame_id: {
                "file": frame.file_name,
                "width": frame.width,
                "height": frame.height,
                "side": sides[frame.frame_id],
            }
            for frame in exported
        }
        document = {"format": self.format, "project_id": project.id, "source": self.source, "frames": entries}
        written_manifest = json.dumps(document, indent=1, sort_keys=True).encode()
        destination.write(MANIFEST, written_manifest)
        summary.frames = len(entries)
        summary.per_side = dict(Counter(str(side) for side in sides.values()))
        summary.per_tag = dict(
            Counter(label for frame in exported for label in {*frame.tags, *(box.tag for box in frame.boxes)})
        )
        summary.seconds = time.monotonic() - self.started
        curator.ledger.log(
            curator.actor,
            "export" if self.source == "ledger" else "migrate",
            project_id=project.id,
            outcome=f"{summary.added} added, {summary.frames} in all" + (", cancelled" if summary.cancelled else ""),
            details={
                "format": self.format,
                "destination": summary.destination,
                "added": summary.added,
                "frames": summary.frames,
                "left_out": len(summary.left_out),
                "cancelled": summary.cancelled,
                "manifest_sha256": hashlib.sha256(written_manifest).hexdigest(),
            },
        )
        return summary

    def _holds(self, frame: LabelledFrame, manifest: dict[str, dict[str, Any]]) -> bool:
        """The frame's image is at the destination: an earlier run or this one wrote it."""
        return frame.frame_id in manifest or frame.frame_id in self.written

    def _layout(self, split: FrameSplit, task: ExportTask) -> ExportLayout:
        if self.format == "coco":
            return coco_export(split, task)
        if self.format == "yolo":
            return yolo_export(split, task)
        if self.datastore is None:
            raise ConfigError(
                "Name the Azure ML datastore that serves the export's container (its image URLs name it)."
            )
        # AutoML's image URLs name the datastore's path: the container prefix the files go under.
        return automl_export(split, task, datastore=self.datastore, prefix=getattr(self.destination, "prefix", ""))

    def _frames(
        self,
        items: Iterable[_Item],
        manifest: dict[str, dict[str, Any]],
        left_out: list[LeftOut],
        write_now: Callable[[LabelledFrame, bytes], None] | None = None,
    ) -> tuple[list[LabelledFrame], dict[str, Callable[[], bytes]]]:
        """The frames to export (sizes from the manifest, or from the fetched image), and how to fetch the new
        ones that are still to be written. New frames are fetched WRITERS at a time; with `write_now` (a format
        whose image paths do not depend on the split) each is written as soon as it is fetched, so it is fetched
        once. Cancelled, no further item is read."""
        frames: list[LabelledFrame] = []
        fetch: dict[str, Callable[[], bytes]] = {}

        def prepare(item: _Item) -> LabelledFrame | LeftOut:
            known = manifest.get(item.frame_id)
            if known is not None:
                return _labelled_frame(item, known["file"], known["width"], known["height"])
            try:
                data = item.fetch()
                with Image.open(io.BytesIO(data)) as image:
                    width, height, image_format = image.width, image.height, image.format or ""
                frame = _labelled_frame(item, export_file_name(item.frame_id, item.name, image_format), width, height)
            except (CuratorError, UnidentifiedImageError, ValueError) as exc:
                return LeftOut(item.frame_id, str(exc))
            if write_now is not None:
                write_now(frame, data)
            else:
                fetch[item.frame_id] = item.fetch
            return frame

        for _, prepared in map_bounded(prepare, self.items(items, manifest), max_concurrency=WRITERS):
            if isinstance(prepared, CuratorError):  # writing it failed (fetching it is the frame's fault: left out)
                raise prepared
            if isinstance(prepared, LeftOut):
                left_out.append(prepared)
                continue
            frames.append(prepared)
            self.read += 1
            self.report()
        return frames, fetch


def _read_manifest(destination: Destination, format: str, project_id: str, source: str) -> dict[str, dict[str, Any]]:
    raw = destination.read(MANIFEST)
    if raw is None:
        return {}
    try:
        document = json.loads(raw)
        frames = document["frames"]
        same = (document["format"], document["project_id"], document.get("source", "ledger")) == (
            format,
            project_id,
            source,
        )
        for entry in frames.values():  # whoever can write the destination wrote this file: names become paths
            Split(entry["side"])
            if not is_safe_file_name(entry["file"]) or not all(
                isinstance(entry[size], int) and entry[size] >= 1 for size in ("width", "height")
            ):
                raise ValueError(entry)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"{destination.describe()} holds a {MANIFEST} this tool cannot read.") from None
    if not same:
        raise ConfigError(
            f"{destination.describe()} holds another export (another format, project or source).",
            hint="Export to an empty folder or prefix.",
        )
    return frames


def _labelled_frame(item: _Item, file_name: str, width: int, height: int) -> LabelledFrame:
    return LabelledFrame(
        item.frame_id,
        file_name,
        width,
        height,
        tags=item.tags,
        boxes=item.boxes,
        model_name=item.model_name,
        model_version=item.model_version,
    )


def _ledger_items(curator: Any, include: str, detection: bool) -> Iterator[_Item]:
    pushed = iter(curator.blobs(states=(BlobState.PUSHED,)))
    while chunk := list(islice(pushed, _CHUNK)):
        yield from _labelled(curator, chunk, include, detection)


def _labelled(curator: Any, blobs: Sequence[RetrainingBlob], include: str, detection: bool) -> Iterator[_Item]:
    records = curator.records(list(blobs))
    boxes: dict[str, tuple[Box, ...]] = {}
    if detection:
        # Boxes the ledger kept as the reviewer saved them; the project's images for those it never kept.
        for record in records.values():
            if record.image_id and record.regions is not None:
                boxes[record.image_id] = tuple(Box(*region) for region in record.regions)
        unknown = [r.image_id for r in records.values() if r.image_id and r.image_id not in boxes]
        for image in curator.customvision.images_by_ids(unknown) if unknown else ():
            boxes[image.id] = _boxes_of(image)
    for blob in blobs:
        record = records.get(blob.key)
        if record is None or record.state is not BlobState.PUSHED:
            continue
        labels = boxes.get(record.image_id or "", ())
        if include == Include.TAGGED and not (record.tags or labels):
            continue
        yield _Item(
            frame_id_of(blob.container, blob.name, blob.etag),
            blob.name,
            tuple(record.tags),
            labels,
            blob.model_name or "",
            blob.model_version or "",
            lambda blob=blob: curator.decrypt(blob),
        )


def _project_items(curator: Any, project_id: str, detection: bool) -> Iterator[_Item]:
    """Every image of the project, oldest first; its provenance (when this tool pushed it) names the frame."""
    client = curator.customvision
    for image in client.iter_images():
        meta = image.metadata
        name = meta.get("source_blob") or image.id
        yield _Item(
            f"customvision/{project_id}/{image.id}",
            name,
            () if detection else tuple(image.tags),
            _boxes_of(image) if detection else (),
            meta.get("model_name", ""),
            meta.get("model_version", ""),
            lambda image=image: client.original_image(image),
        )


def _boxes_of(image: Any) -> tuple[Box, ...]:
    return tuple(Box(r["tag_name"], r["left"], r["top"], r["width"], r["height"]) for r in image.regions)
