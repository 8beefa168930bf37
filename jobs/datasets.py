"""Dataset files in the official layouts (SEMANTICS 1-3): class list, split file, labels (ActivityNet-1.3 JSON,
Mini-Kinetics CSV, HVU v1.0 CSV), HVU's ``Tag,Category`` CSV, frames ``<frames root>/<video key>/*.jpeg``.

A split video that cannot be evaluated is listed in ``Dataset.skipped`` with the reason. :data:`REGISTRY`
holds every fact about each dataset (one :class:`DatasetSpec`); adding a dataset is one entry, its reader
and split builder, and its tests.
"""

from __future__ import annotations

import contextvars
import csv
import glob
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from frameexit.errors import DatasetError, DatasetFileNotFoundError


@dataclass(frozen=True)
class Video:
    """A split video that can be evaluated."""

    key: str  # the split-file entry, e.g. v_abc.mp4
    frames: tuple[str, ...]  # its *.jpeg files, sorted by path
    labels: tuple[int, ...]  # class indices (empty for a video without annotations)


@dataclass(frozen=True)
class Skipped:
    """A split video left out of the evaluation, and why."""

    video: str
    reason: str


@dataclass(frozen=True)
class Dataset:
    """Evaluated and skipped videos (each sorted by key), how many the split lists, the class names, and the
    SHA-256 of every file read, by path, from the bytes parsed (the cache key's, :func:`cache.inputs.key_inputs`)."""

    videos: tuple[Video, ...]
    skipped: tuple[Skipped, ...]
    n_listed: int
    classes: tuple[str, ...] = ()
    digests: Mapping[str, str] = field(default_factory=dict)


#: While :func:`load_dataset` reads: the SHA-256 of each file :func:`_open` reads, by path.
_DIGESTS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("dataset_digests", default=None)


def _open(path: str, what: str, key: str) -> io.StringIO:
    """The file's text as a handle; a missing, unreadable or non-UTF-8 file is a :class:`DatasetError` naming it."""
    if not path:
        raise DatasetError(f"no {what} given: set {key}")
    if not os.path.isfile(path):
        raise DatasetFileNotFoundError(f"{what} not found: {path} (from {key})")
    try:
        with open(path, "rb") as handle:
            content = handle.read()
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{what} {path} (from {key}) is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {what} {path} (from {key}): {exc.strerror or exc}") from None
    digests = _DIGESTS.get()
    if digests is not None:
        digests[path] = hashlib.sha256(content).hexdigest()
    return io.StringIO(text, newline="")


def read_class_list_digest(path: str) -> tuple[list[str], str]:
    """:func:`read_class_list` and the SHA-256 of the bytes it parsed (the file is read once)."""
    digests: dict[str, str] = {}
    token = _DIGESTS.set(digests)
    try:
        return read_class_list(path), digests[path]
    finally:
        _DIGESTS.reset(token)


def read_class_list(path: str) -> list[str]:
    """Class names in file order (lines stripped; blank lines at the end ignored)."""
    with _open(path, "class list", "data.path_classid") as handle:
        names = [line.strip() for line in handle.read().splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names:
        raise DatasetError(f"class list {path} is empty")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if not name:
            raise DatasetError(f"class list {path}: line {i + 1} is blank")
        if name in seen:
            raise DatasetError(f"class list {path}: {name!r} appears on lines {seen[name] + 1} and {i + 1}")
        seen[name] = i
    return names


def unsafe_key(key: str) -> str | None:
    """Why ``key`` cannot name a folder directly under the frames root (``None`` when it can): a key is joined
    to ``data.path_frame``, and one with a path separator, ``.`` or ``..``, or a NUL would name one elsewhere."""
    if key in (".", ".."):
        return f"{key!r} names a folder itself, not one under it"
    if "/" in key or os.sep in key or (os.altsep and os.altsep in key):
        return f"{key!r} holds a path separator"
    if "\0" in key:
        return f"{key!r} holds a NUL character"
    return None


def read_split(path: str) -> list[str]:
    """Video keys of a split file, in file order (lines stripped, blank lines ignored); a key listed twice (neither
    dropping nor counting the copy is what the file says) or an :func:`unsafe_key` is an error naming the line."""
    with _open(path, "split file", "data.path_split") as handle:
        lines = [line.strip() for line in handle.read().splitlines()]
    seen: dict[str, int] = {}
    for number, key in enumerate(lines, start=1):
        if not key:
            continue
        why = unsafe_key(key)
        if why:
            raise DatasetError(
                f"split file {path}, line {number}: the video key {why}: a key is one folder name under data.path_frame"
            )
        if key in seen:
            raise DatasetError(f"split file {path}: {key!r} appears on lines {seen[key]} and {number}")
        seen[key] = number
    return list(seen)


def read_activitynet_database(path: str) -> Mapping[str, Mapping]:
    """``database`` of an ActivityNet annotation file, ``{<id>: entry mapping}``; else :class:`DatasetError`."""
    with _open(path, "ActivityNet label file", "data.path_label") as handle:
        try:
            doc = json.load(handle)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"ActivityNet label file {path} is not valid JSON: {exc}") from None
        except RecursionError:
            raise DatasetError(f"ActivityNet label file {path} is nested too deeply to be annotations") from None
    database = doc.get("database") if isinstance(doc, Mapping) else None
    if not isinstance(database, Mapping):
        raise DatasetError(f"ActivityNet label file {path} has no 'database' mapping")
    for vid, entry in database.items():
        if not isinstance(entry, Mapping):
            raise DatasetError(f"ActivityNet label file {path}: database[{vid!r}] is {entry!r}, not an entry")
    return database


def read_activitynet_labels(path: str) -> dict[str, list[str]]:
    """``{'v_<id>.mp4': [label, ...]}`` from ``database[<id>]['annotations'][*]['label']``."""
    labels = {}
    for vid, entry in read_activitynet_database(path).items():
        annotations = entry.get("annotations", [])
        if not isinstance(annotations, list) or not all(isinstance(a, Mapping) and "label" in a for a in annotations):
            raise DatasetError(f"ActivityNet label file {path}: database[{vid!r}] has malformed 'annotations'")
        labels[f"v_{vid}.mp4"] = [str(a["label"]) for a in annotations]
    return labels


MINIKINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split", "is_cc")


def minikinetics_key(youtube_id: str, time_start: str, time_end: str) -> str:
    """``<youtube_id>_<int(time_start):06d>_<int(time_end):06d>.mp4`` from the CSV's text fields."""
    return f"{youtube_id}_{time_start.split('.')[0].zfill(6)}_{time_end.split('.')[0].zfill(6)}.mp4"


def read_minikinetics_labels(path: str) -> dict[str, list[str]]:
    """``{key: [label]}`` from a Kinetics CSV (header ``label,youtube_id,time_start,time_end,split,is_cc``)."""
    labels: dict[str, list[str]] = {}
    for _, label, youtube_id, start, end in _kinetics_rows(path, "Mini-Kinetics label file", MINIKINETICS_COLUMNS):
        labels.setdefault(minikinetics_key(youtube_id, start, end), []).append(label.strip('"'))
    return labels


def _csv_rows(path: str, what: str, key: str, columns: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    """``(line, row)`` of each non-empty row of a CSV whose header must start with ``columns``."""
    with _open(path, what, key) as handle:
        rows = list(csv.reader(handle))
    if not rows or tuple(c.strip() for c in rows[0][: len(columns)]) != columns:
        raise DatasetError(f"{what} {path} must start with the header {','.join(columns)}")
    return [(line, row) for line, row in enumerate(rows[1:], start=2) if row]


def _kinetics_rows(path: str, what: str, columns: tuple[str, ...]) -> Iterator[tuple[int, str, str, str, str]]:
    """``(line, labels, youtube_id, time_start, time_end)`` of each row of a Kinetics-style CSV, stripped."""
    for line, row in _csv_rows(path, what, "data.path_label", columns):
        if len(row) < 4:
            raise DatasetError(f"{what} {path}, line {line}: expected at least 4 columns, got {row}")
        yield (line, *(c.strip() for c in row[:4]))


HVU_COLUMNS = ("Tags", "youtube_id", "time_start", "time_end")
#: Frame-folder names of HVU videos: the Kinetics style, ``<youtube_id>_<start:06d>_<end:06d>.mp4``.
HVU_KEY_FORMAT = "{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"


def hvu_key(youtube_id: str, time_start: str, time_end: str, key_format: str | None = None) -> str:
    """The split key of an HVU row: ``key_format`` (default :data:`HVU_KEY_FORMAT`) filled with the row's fields,
    the times as integers (their integer part) so that ``{time_start:06d}`` zero-pads as the Kinetics keys do."""
    start, end = (int(text.split(".")[0] or 0) for text in (time_start, time_end))
    return (key_format or HVU_KEY_FORMAT).format(youtube_id=youtube_id, time_start=start, time_end=end)


def read_hvu_labels(path: str, key_format: str | None = None) -> dict[str, list[str]]:
    """``{key: [tag, ...]}`` from an HVU v1.0 CSV (header ``Tags,youtube_id,time_start,time_end``, tags separated
    by ``|``); a row with no tag is a video without labels; a video on several rows gets the tags of all."""
    labels: dict[str, list[str]] = {}
    for line, tags, youtube_id, start, end in _kinetics_rows(path, "HVU label file", HVU_COLUMNS):
        try:
            key = hvu_key(youtube_id, start, end, key_format)
        except (ValueError, KeyError, IndexError) as exc:
            raise DatasetError(
                f"HVU label file {path}, line {line}: cannot make a video key with data.key_format "
                f"{key_format or HVU_KEY_FORMAT!r} from youtube_id={youtube_id!r}, time_start={start!r}, "
                f"time_end={end!r}: {exc}"
            ) from None
        found = labels.setdefault(key, [])
        found += [t for t in (tag.strip() for tag in tags.split("|")) if t and t not in found]
    return labels


def read_tag_categories(path: str) -> list[tuple[str, str]]:
    """``(tag, category)`` rows of a ``Tag,Category`` CSV (HVU's tag-category file), in file order."""
    pairs = []
    for line, row in _csv_rows(path, "category file", "data.path_category", ("Tag", "Category")):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DatasetError(f"category file {path}, line {line}: expected a tag and a category, got {row}")
        pairs.append((row[0].strip(), row[1].strip()))
    return pairs


def read_tags(path: str) -> list[str]:
    """Every tag of a ``Tag,Category`` CSV, once each, in file order."""
    return list(dict.fromkeys(tag for tag, _ in read_tag_categories(path)))


def read_categories(path: str, classes: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """The classes of each category of a ``Tag,Category`` CSV, by category name (sorted; indices ascending); every
    class must have one; a tag that is not a class is ignored; a tag under two categories counts in both."""
    pairs = read_tag_categories(path)
    index = {c: i for i, c in enumerate(classes)}
    members: dict[str, set[int]] = {}
    for tag, category in pairs:
        if tag in index:
            members.setdefault(category, set()).add(index[tag])
    seen = {tag for tag, _ in pairs}
    missing = [c for c in classes if c not in seen]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DatasetError(
            f"category file {path} gives no category for the class(es) {', '.join(map(repr, missing[:3]))}{more} "
            "of the class list (data.path_classid)"
        )
    return {name: tuple(sorted(members[name])) for name in sorted(members)}


def read_labels(name: str, path: str, key_format: str | None = None) -> dict[str, list[str]]:
    """Labels by video key for the ``data.name`` of a :data:`REGISTRY` entry, read by that entry's reader."""
    spec = BY_NAME.get(name)
    if spec is None:
        *head, last = (repr(s.name) for s in REGISTRY)
        raise DatasetError(f"data.name must be {', '.join(head)} or {last}, got {name!r}")
    return spec.read_labels(path, key_format)


#: File name extensions of videos: a frame folder named ``<stem><one of these>`` is a video's folder.
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".flv", ".mpg", ".mpeg", ".3gp")


def split_key(video_file: str) -> str:
    """The split key, hence the frame folder name, of a video file: its stem plus ``.mp4`` whatever container a
    downloader saved (``v_abc.mkv`` -> ``v_abc.mp4``), as split keys always end in ``.mp4``."""
    return os.path.splitext(os.path.basename(video_file))[0] + ".mp4"


class FolderHints:
    """Why a split key has no frame folder, when one of the same video exists under another extension (other
    tools, or older ``prepare frames``, name it after the video file: ``v_abc.mkv``); the root is listed once."""

    def __init__(self, frames_root: str) -> None:
        self.frames_root = frames_root
        self._by_key: dict[str, str] | None = None

    def __call__(self, key: str) -> str:
        """`` (found <folder>: ...)`` for a misnamed folder of ``key``, else an empty string."""
        if self._by_key is None:
            self._by_key = {}
            for entry in sorted(os.listdir(self.frames_root)):
                if entry.lower().endswith(VIDEO_SUFFIXES) and split_key(entry) != entry:
                    self._by_key.setdefault(split_key(entry), entry)
        found = self._by_key.get(key)
        return "" if found is None else f" (found {found}: frame folders are named by split key; rename it to {key})"


def list_frames(frames_root: str, key: str) -> list[str]:
    """The video's ``*.jpeg`` files sorted by path (empty if the folder is missing or has none)."""
    return sorted(glob.glob(os.path.join(glob.escape(os.path.join(frames_root, key)), "*.jpeg")))


def load_dataset(
    name: str,
    *,
    path_frame: str | None,
    path_split: str | None,
    path_label: str | None,
    path_classid: str | None,
    num_class: int,
    key_format: str | None = None,
) -> Dataset:
    """Read the split, labels and class list, and find every video's frames; a :class:`DatasetError` for a missing
    file, an unknown label or a class list of another length than ``num_class``; other videos are skipped."""
    digests: dict[str, str] = {}
    token = _DIGESTS.set(digests)  # the files' SHA-256, from the bytes parsed
    try:
        classes = read_class_list(path_classid or "")
        if len(classes) != num_class:
            raise DatasetError(
                f"class list {path_classid} has {len(classes)} classes but model.num_class is {num_class}"
            )
        keys = read_split(path_split or "")
        labels = read_labels(name, path_label or "", key_format)
    finally:
        _DIGESTS.reset(token)
    index = {c: i for i, c in enumerate(classes)}
    if not path_frame:
        raise DatasetError("no frames root given: set data.path_frame")
    if not os.path.isdir(path_frame):
        raise DatasetFileNotFoundError(f"frames root not found: {path_frame} (from data.path_frame)")
    videos, skipped = [], []
    hint = FolderHints(path_frame)
    for key in sorted(keys):
        if key not in labels:
            skipped.append(Skipped(key, f"no entry in the label file {path_label}"))
            continue
        unknown = [lab for lab in labels[key] if lab not in index]
        if unknown:
            raise DatasetError(
                f"video {key}: label {unknown[0]!r} from {path_label} is not in the class list {path_classid}"
            )
        folder = os.path.join(path_frame, key)
        if not os.path.isdir(folder):
            skipped.append(Skipped(key, f"no frame folder {folder}{hint(key)}"))
            continue
        frames = list_frames(path_frame, key)
        if not frames:
            skipped.append(Skipped(key, f"no *.jpeg frames in {folder}"))
            continue
        videos.append(Video(key, tuple(frames), tuple(sorted({index[lab] for lab in labels[key]}))))
    return Dataset(tuple(videos), tuple(skipped), len(keys), tuple(classes), digests)


def load_job_dataset(data, num_class: int) -> Dataset:
    """:func:`load_dataset` for a job's ``data`` section (a :class:`jobs.config.DataConfig`)."""
    paths = {k: getattr(data, k) for k in ("path_frame", "path_split", "path_label", "path_classid", "key_format")}
    return load_dataset(data.name, num_class=num_class, **paths)


def require_videos(n_videos: int, skipped, path_split: str | None) -> None:
    """:class:`DatasetError` with the first reasons when no video can be evaluated (nothing has no mAP or top-1);
    ``skipped`` holds :class:`Skipped` entries or ``{'video', 'reason'}`` mappings."""
    if n_videos > 0:
        return
    entries = [(s["video"], s["reason"]) if isinstance(s, Mapping) else (s.video, s.reason) for s in skipped]
    if not entries:
        raise DatasetError(f"split file {path_split} lists no video")
    reasons = "; ".join(f"{video}: {reason}" for video, reason in entries[:3])
    more = f" (and {len(entries) - 3} more)" if len(entries) > 3 else ""
    hint = ""
    if any(any(c.isspace() for c in video) for video, _ in entries):
        hint = (
            " The split's lines hold spaces: a split file lists one video key per line (e.g. v_<id>.mp4), nothing else."
        )
    raise DatasetError(
        f"no video of split {path_split} can be evaluated: all {len(entries)} listed are skipped: {reasons}{more}.{hint}"
    )


def load_categories(data, classes: Sequence[str] | None = None) -> dict[str, tuple[int, ...]] | None:
    """:func:`read_categories` of a job's ``data.path_category`` (``None`` without one); ``classes``: the class
    list when already read (else read from ``data.path_classid``)."""
    if not data.path_category:
        return None
    return read_categories(data.path_category, classes or read_class_list(data.path_classid or ""))


@dataclass(frozen=True)
class SplitRows:
    """A validation split as one dataset's annotation files give it (:attr:`DatasetSpec.build_split`)."""

    keys: list[str]  # sorted
    labels: dict[str, list[str]]  # by key, of the annotation file
    names: set[str]  # the class names of the split's class list
    left_out: list[str]  # what the annotations hold that the split leaves out, counted, in words


def activitynet_split(annotation: str, **_: object) -> SplitRows:
    """Every video of the JSON whose ``subset`` is ``validation``, as ``v_<id>.mp4``; classes: every label of
    the file (all subsets: the 200 classes)."""
    database = read_activitynet_database(annotation)
    keys = sorted(f"v_{vid}.mp4" for vid, entry in database.items() if entry.get("subset") == "validation")
    other_case = sorted(
        f"v_{vid}.mp4"
        for vid, entry in database.items()
        if isinstance(entry.get("subset"), str)
        and entry["subset"] != "validation"
        and entry["subset"].strip().lower() == "validation"
    )
    left_out = []
    if other_case:
        left_out.append(
            f"{len(other_case)} video(s) whose subset is written otherwise than 'validation' (the official "
            f"code's exact comparison): {', '.join(other_case[:5])}"
        )
    labels = read_activitynet_labels(annotation)
    return SplitRows(keys, labels, {lab for labs in labels.values() for lab in labs}, left_out)


def minikinetics_split(
    annotation: str, *, val_list: str, read_val_list: Callable[[], list[str]], **_: object
) -> SplitRows:
    """The videos of ``val_list`` (``mini_val_videofolder.txt``, its ids read by ``read_val_list``) found in the
    Kinetics CSV; classes: the labels of those videos (the CSV holds all 400 Kinetics classes)."""
    labels = read_minikinetics_labels(annotation)
    wanted = read_val_list()
    by_id: dict[str, list[str]] = {}
    for key in labels:
        by_id.setdefault(key.rsplit("_", 2)[0], []).append(key)
    keys = sorted({k for w in wanted for k in (by_id.get(w.removesuffix(".mp4"), []) if w not in labels else [w])})
    absent = [w for w in wanted if w not in labels and w.removesuffix(".mp4") not in by_id]
    left_out = []
    if absent:
        left_out.append(f"{len(absent)} id(s) of {val_list} without a row in {annotation}: {', '.join(absent[:5])}")
    return SplitRows(keys, labels, {lab for k in keys for lab in labels[k]}, left_out)


def hvu_split(annotation: str, *, categories: str | None, key_format: str | None, **_: object) -> SplitRows:
    """Every video of the annotation CSV, keyed by ``key_format``; classes: every tag of ``categories`` (the
    ``Tag,Category`` file, all 3,142 tags) when given, else the tags of the CSV."""
    labels = read_hvu_labels(annotation, key_format)
    names = {lab for labs in labels.values() for lab in labs}
    if categories:
        names = set(read_tags(categories))
    return SplitRows(sorted(labels), labels, names, [])


@dataclass(frozen=True)
class DatasetSpec:
    """Everything that differs between datasets: one entry of :data:`REGISTRY` each."""

    name: str  # data.name of its job files (e.g. activitynet1.3); also the dataset of replay and report records
    cli_name: str  # --dataset of prepare frames and prepare splits, e.g. activitynet
    title: str  # its name in messages, e.g. Mini-Kinetics
    job_file: str  # its bundled job file under jobs/
    read_labels: Callable[[str, str | None], dict[str, list[str]]]  # (path_label, key_format) -> {key: [label]}
    # (annotation, *, val_list, read_val_list, categories, key_format) -> SplitRows: its validation split
    build_split: Callable[..., SplitRows]
    # the default of data.key_format (--key-format), how a key is made from the label file's fields; None: the
    # reader's keys are fixed (v_<id>.mp4, the Kinetics style) and the option refused
    key_format: str | None = None
    accuracy: str = "map"  # map or top1: what the report's frontier, budget and curve use by default
    multi_label: bool = False  # several labels per video: training defaults to a per-class (BCE) loss
    fps: int = 5  # the prepare frames preset: frames per second (Kinetics's) ...
    min_side: int = 256  # ... and the shorter side in pixels
    num_class: int = 200  # model.num_class of its job file
    val_list: str | None = None  # the file --val-list names when the split comes from one (then required)
    # the official README publishes FrameExit's ResNet-50 curve on it (reports.summary.PUBLISHED_ACTIVITYNET_RESNET50)
    published_curve: bool = False

    @property
    def frames_preset(self) -> dict[str, int]:
        """The keyword arguments of the official ffmpeg command for its frames (``fps``, ``min_side``)."""
        return {"fps": self.fps, "min_side": self.min_side}


#: One entry per dataset. HVU's frame rate and size are not published: its clips are Kinetics clips, so they
#: get Mini-Kinetics's.
REGISTRY: tuple[DatasetSpec, ...] = (
    DatasetSpec(
        name="activitynet1.3",
        cli_name="activitynet",
        title="ActivityNet",
        job_file="activitynet_inference_2d.yml",
        read_labels=lambda path, key_format: read_activitynet_labels(path),
        build_split=activitynet_split,
        fps=1,
        min_side=350,
        published_curve=True,
    ),
    DatasetSpec(
        name="minikinetics",
        cli_name="minikinetics",
        title="Mini-Kinetics",
        job_file="minikinetics_inference_2d.yml",
        read_labels=lambda path, key_format: read_minikinetics_labels(path),
        build_split=minikinetics_split,
        accuracy="top1",
        val_list="mini_val_videofolder.txt",
    ),
    DatasetSpec(
        name="hvu",
        cli_name="hvu",
        title="HVU",
        job_file="hvu_inference_2d.yml",
        read_labels=read_hvu_labels,
        build_split=hvu_split,
        key_format=HVU_KEY_FORMAT,
        multi_label=True,
        num_class=3142,
    ),
)
#: :data:`REGISTRY` by ``data.name``.
BY_NAME: dict[str, DatasetSpec] = {spec.name: spec for spec in REGISTRY}
#: :data:`REGISTRY` by ``--dataset`` (``prepare``).
BY_CLI_NAME: dict[str, DatasetSpec] = {spec.cli_name: spec for spec in REGISTRY}
