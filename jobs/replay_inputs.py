"""What a replay reads: the job's feature cache, and for each checkpoint either its exit tables stored in that cache
(:mod:`cache.exit_tables`) or its head, read with torch and run over the features (the tables then stored).

A replay whose checkpoints all have stored tables imports no torch: the checkpoint file's SHA-256 names its tables,
and their manifest records what the replay needs of the checkpoint: the backbone digest that names the cache, the
head's sizes (checked against the job as the checkpoint's would be) and its measured costs. Anything not found
that way (no tables, another torch, a renamed cache) takes the path that reads the checkpoint, with its checks and
messages.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import importlib.util
import logging
import os
import sys
from collections.abc import Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cache.exactness import BATCHED, PER_STEP
from cache.exit_tables import (
    TABLES_DIR,
    TABLES_MANIFEST,
    StoredTables,
    TablesBusyError,
    TablesCorruptError,
    TablesInputs,
    TablesWriter,
    discard_tables,
    find_tables,
    read_tables_manifest,
    resampled_dir,
    storing_tables,
)
from cache.find import frames_differences, open_cache
from cache.inputs import check_job_files, file_digests
from cache.manifest import CacheError, FeatureCache
from frameexit.errors import CheckpointError, ConfigError, FrameExitError
from frameexit.step_costs import StepCosts
from frameexit.train_config import HEAD_PRECISION
from reports.records import package_version

from .cache_keys import cache_key_inputs
from .config import Job
from .datasets import load_job_dataset, read_class_list_digest
from .replay_graph import ResampledStore

if TYPE_CHECKING:
    from .model import HeadState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayHead:
    """One checkpoint of a replay: its stored exit tables (``stored``), or its head (``state``) to run."""

    name: str  # the checkpoint, as the job names it
    sha256: str  # of the checkpoint file
    hidden_dim: int
    costs: StepCosts  # measured GMACs per part of the job's model with this head
    paper_per_step: float | None  # the paper's per-step cost of the job's backbone (jobs.model.paper_per_step)
    inputs: TablesInputs  # what its tables depend on (their key)
    # what the tables' manifest records of the checkpoint: backbone digest, head sizes, costs, paper per-step cost
    facts: dict[str, Any]
    stored: StoredTables | None = None
    state: HeadState | None = None


#: The modules whose code computes the exit tables, and those that compute a setting's bootstrap resamples from its
#: probabilities: their source is part of the key of what is kept, so that nothing another version of that code
#: computed is ever read.
HEAD_MODULES = ("frameexit.head", "frameexit.head_pass", "frameexit.checkpoint")
BOOTSTRAP_MODULES = ("frameexit.bootstrap", "frameexit.metrics")


@functools.cache
def code_digest(modules: tuple[str, ...]) -> str:
    """SHA-256 of the source files of ``modules``, read without importing them (nor torch)."""
    digest = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(name)
        with open(spec.origin, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()


def resampled_store(cache: FeatureCache, options: Any) -> ResampledStore | None:
    """Where a replay keeps and finds its named settings' bootstrap resamples (none with ``--exit-tables off``)."""
    if not stores_tables(options):
        return None
    return ResampledStore(resampled_dir(cache.directory), code_digest(BOOTSTRAP_MODULES))


def head_device(option: str) -> tuple[str, str]:
    """Where a replay's heads run for ``--head-device`` ``option`` (``cpu``, ``auto``, ``cuda``, ``cuda:N``): the
    torch device (``cpu`` or ``cuda:N``) and its label in the exit tables' key and in ``replay.json`` (``cpu`` or
    ``cuda (<GPU name>)``: another GPU's kernels may round otherwise). ``cpu``, and ``auto`` on a machine without
    a GPU, import no torch (:func:`_gpu_may_be_present`)."""
    if option == "cpu" or (option == "auto" and not _gpu_may_be_present()):
        return "cpu", "cpu"
    import torch

    from .model import resolve_device

    device = resolve_device(option, option_name="--head-device")
    if device.type != "cuda":
        return "cpu", "cpu"
    index = torch.cuda.current_device() if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"--head-device {option} was asked for, but torch sees {torch.cuda.device_count()} CUDA device(s)"
        )
    return f"cuda:{index}", f"cuda ({torch.cuda.get_device_name(index)})"


def _gpu_may_be_present() -> bool:
    """False where torch cannot see a CUDA device: on Linux, no device file of an NVIDIA driver (or of ROCm's,
    which ``torch.cuda`` also drives). Where one exists (or elsewhere than Linux) torch is asked."""
    if sys.platform != "linux":
        return True
    return any(os.path.exists(f"/dev/{name}") for name in ("nvidiactl", "kfd", "dxg")) or bool(
        glob.glob("/dev/nvidia[0-9]*")
    )


def tables_inputs(cache: FeatureCache, checkpoint_sha256: str, order: Sequence[int], device: str) -> TablesInputs:
    """The inputs (and so the key) of a checkpoint's exit tables over ``cache``, its head run on ``device`` (the
    label of :func:`head_device`)."""
    return TablesInputs(
        cache_key=cache.manifest.key,
        shards=tuple(sha or "" for _, sha in cache.shards()),
        checkpoint=checkpoint_sha256,
        order=tuple(int(t) for t in order),
        precision=HEAD_PRECISION,
        torch=package_version("torch"),
        device=device,
        code=code_digest(HEAD_MODULES),
    )


def replay_inputs(
    job: Job,
    options: Any,
    *,
    cache: FeatureCache | None = None,
    classes: Sequence[str] | None = None,
    first: HeadState | None = None,
    refuse: Collection[int] = (),
) -> tuple[FeatureCache, Sequence[str] | None, list[ReplayHead]]:
    """The cache a replay reads (``cache``, ``classes`` when an extraction in this process just opened it), its class
    list (with ``data.path_category``, else None) and its checkpoints (:class:`ReplayHead`), in the job's order.
    ``first``: the first checkpoint's head, when already read; ``refuse``: checkpoints whose stored tables must not
    be read (found corrupt): their heads run again."""
    want_classes = bool(job.data.path_category)
    _, device = head_device(options.head_device)
    if options.exit_tables == "off":
        refuse = range(len(job.checkpoints))
    # each checkpoint file is read once: its SHA-256 names its stored tables, and where it has none, torch loads the
    # same bytes
    content = [None if i == 0 and first is not None else _file_bytes(c) for i, c in enumerate(job.checkpoints)]
    digests = [_sha256(c) for c in content]
    if first is not None:
        digests[0] = first.sha256
    if cache is None and digests[0] and 0 not in refuse:
        found = _cache_of_stored_tables(job, options, digests[0], want_classes)
        if found is not None:
            cache, classes = found
    if cache is None:
        first = read_head(job, job.checkpoints[0], content[0])
        cache, classes = open_job_cache(job, options, first.backbone_digest, classes=want_classes)
    heads, costs = [], {}  # costs: measured once per head width (the FLOP count builds the backbone)
    for i, checkpoint in enumerate(job.checkpoints):
        inputs = tables_inputs(cache, digests[i], job.model.input_order, device) if digests[i] else None
        stored = find_tables(cache.directory, inputs) if inputs is not None and i not in refuse else None
        if stored is not None and _fits(job, cache, checkpoint, stored.head):
            heads.append(_stored_head(checkpoint, inputs, stored))
        else:
            state = first if i == 0 and first is not None else read_head(job, checkpoint, content[i])
            heads.append(_running_head(job, cache, checkpoint, state, costs, device))
        content[i] = None  # the bytes of a checkpoint read, or not needed
    return cache, classes, heads


def stores_tables(options: Any) -> bool:
    """Whether a replay with ``options`` stores the exit tables it computes."""
    return options.exit_tables != "off"


def _file_bytes(path: str) -> bytes | None:
    """A checkpoint file's bytes, None where it cannot be read (reading it with torch says why)."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def _sha256(content: bytes | None) -> str | None:
    return hashlib.sha256(content).hexdigest() if content is not None else None


def _cache_of_stored_tables(
    job: Job, options: Any, digest: str, want_classes: bool
) -> tuple[FeatureCache, Sequence[str] | None] | None:
    """The job's cache, named by the backbone digest recorded with stored tables of the checkpoint whose file has
    SHA-256 ``digest`` (in ``--features``, or in any cache under the root); None where no such tables lead to it."""
    # the caches to look in: --features, or every cache directory under the root
    base = glob.escape(options.features) if options.features else os.path.join(glob.escape(options.cache_root), "*")
    backbones = set()
    for path in glob.glob(os.path.join(base, TABLES_DIR, "*", TABLES_MANIFEST)):
        manifest = read_tables_manifest(os.path.dirname(path))
        if manifest is not None and manifest.complete and manifest.inputs.get("checkpoint") == digest:
            backbones.add(manifest.head.get("backbone_digest"))
    for backbone in sorted(b for b in backbones if isinstance(b, str)):
        try:
            return open_job_cache(job, options, backbone, classes=want_classes)
        except (CacheError, ConfigError):
            continue  # the checkpoint's tables belong to another job's cache: the path with torch says what is wrong
    return None


def _fits(job: Job, cache: FeatureCache, checkpoint: str, facts: dict[str, Any]) -> bool:
    """Whether stored tables' record of the checkpoint fits the job and the cache; a head that does not fit the job
    raises the error reading the checkpoint would."""
    try:
        sizes = {k: int(facts[k]) for k in ("num_class", "num_steps", "feat_dim", "hidden_dim")}
        StepCosts(**facts["costs"])
    except (KeyError, TypeError, ValueError):
        return False
    if facts.get("backbone_digest") != cache.manifest.inputs.get("backbone_digest", facts.get("backbone_digest")):
        return False
    check_head_sizes(job, checkpoint, sizes["num_class"], sizes["num_steps"], sizes["feat_dim"])
    return True


def check_head_sizes(job: Job, path: str, num_class: int, num_steps: int, feat_dim: int) -> None:
    """Raise :class:`CheckpointError` if a checkpoint's head does not fit the job (classes, steps, feature length)."""
    model = job.model
    if num_class != model.num_class:
        raise CheckpointError(f"checkpoint {path} has {num_class} classes but model.num_class is {model.num_class}")
    if num_steps != job.data.num_frames:
        raise CheckpointError(
            f"checkpoint {path} has {num_steps} classifiers (steps) but data.num_frames is {job.data.num_frames}"
        )
    if feat_dim != model.output_dim:
        raise CheckpointError(
            f"checkpoint {path} projects {feat_dim}-d backbone features "
            f"but model.backbone.output_dim is {model.output_dim}"
        )


def _stored_head(checkpoint: str, inputs: TablesInputs, stored: StoredTables) -> ReplayHead:
    facts = stored.head
    return ReplayHead(
        name=checkpoint,
        sha256=inputs.checkpoint,
        hidden_dim=int(facts["hidden_dim"]),
        costs=StepCosts(**facts["costs"]),
        paper_per_step=facts.get("paper_per_step"),
        inputs=inputs,
        facts=dict(facts),
        stored=stored,
    )


def _running_head(
    job: Job, cache: FeatureCache, checkpoint: str, state: HeadState, by_width: dict[int, StepCosts], device: str
) -> ReplayHead:
    """A checkpoint whose head runs (on ``device``, a :func:`head_device` label): :class:`ConfigError` for one whose
    backbone did not make the cache. ``by_width``: the measured costs of each head width met so far (added to)."""
    from .model import paper_per_step, step_costs

    cache_digest = cache.manifest.inputs.get("backbone_digest")
    if state.backbone_digest != cache_digest:
        raise ConfigError(
            f"checkpoint {checkpoint} has other backbone weights than the feature cache {cache.directory} "
            f"(backbone digest {state.backbone_digest[:12]}..., cache {str(cache_digest)[:12]}...); its heads cannot "
            f"replay over these features: run frameexit extract with --checkpoint.init {checkpoint}"
        )
    if state.hidden_dim not in by_width:
        by_width[state.hidden_dim] = step_costs(job, state.hidden_dim)
    costs, paper = by_width[state.hidden_dim], paper_per_step(job)
    facts = {
        "backbone_digest": state.backbone_digest,
        **dataclasses.asdict(state.shape),
        "costs": dataclasses.asdict(costs),
        "paper_per_step": paper,
    }
    inputs = tables_inputs(cache, state.sha256, job.model.input_order, device)
    return ReplayHead(checkpoint, state.sha256, state.hidden_dim, costs, paper, inputs, facts, state=state)


def read_head(job: Job, checkpoint: str, content: bytes | None = None) -> HeadState:
    """A checkpoint read with torch, checked against the job (:func:`jobs.model.checkpoint_file`; ``content``: the
    file's bytes, when already read), as a head."""
    from .model import HeadState, checkpoint_file

    state, sha256 = checkpoint_file(job, checkpoint, content)
    return HeadState(checkpoint, sha256, state)


@contextmanager
def storing(
    cache: FeatureCache, heads: Sequence[ReplayHead], store: bool = True
) -> Iterator[list[TablesWriter | None]]:
    """For each head that runs, a writer of its tables into the cache (None for the others, without ``store``, and
    where the cache cannot take them: another replay is storing the same tables, or the folder is read-only: said,
    not fatal)."""
    with ExitStack() as stack:
        writers: list[TablesWriter | None] = []
        for head in heads:
            writer = None
            if store and head.state is not None:
                try:
                    writer = stack.enter_context(storing_tables(cache.directory, head.inputs, head.facts))
                except (TablesBusyError, OSError, FrameExitError) as exc:
                    log.warning("the exit tables of %s are not stored in the cache: %s", head.name, exc)
            writers.append(writer)
        yield writers


def finish_storing(writer: TablesWriter, head: ReplayHead, written: Sequence[dict[str, str]]) -> None:
    """Record the tables a replay wrote (each shard's ``{"sha256": ...}`` or ``{"error": ...}``) as a complete set;
    a set with a table that could not be written is not recorded (said, not fatal)."""
    failed = [w["error"] for w in written if "error" in w]
    if failed:
        log.warning("the exit tables of %s are not stored in the cache: %s", head.name, failed[0])
        return
    provenance = {"torch": head.inputs.torch, "checkpoint": os.path.abspath(head.name)}
    try:
        writer.finish([w["sha256"] for w in written], provenance)
    except (OSError, FrameExitError) as exc:
        log.warning("the exit tables of %s are not stored in the cache: %s", head.name, exc)


def refuse_tables(heads: Sequence[ReplayHead], error: TablesCorruptError) -> int:
    """The checkpoint whose stored table ``error`` refused, its set forgotten (said): its head must run again."""
    bad = os.path.abspath(error.path)
    for i, head in enumerate(heads):
        if head.stored is not None and bad in (os.path.abspath(p) for p, _ in head.stored.files):
            log.warning("%s: refused; the exit tables of %s are computed again", error, head.name)
            discard_tables(head.stored.directory)
            return i
    raise error


def open_job_cache(
    job: Job, options: Any, digest: str, *, classes: bool = False
) -> tuple[FeatureCache, list[str] | None]:
    """The job's cache: the directory its key (extract's, with ``digest`` of the first checkpoint's backbone) names
    under the root, or ``--features``; the frames are read only when ``verify_frames`` asks. With ``classes``, the
    class list too (else None). Each dataset file is read once: what is parsed is what is hashed for the key."""
    job.require("data.path_split", "data.path_label", "data.path_classid")
    check_job_files(job.data)
    known: dict[str, str] = {}
    class_list = dataset = None
    if options.verify_frames:
        job.require("data.path_frame")
        if not os.path.isdir(job.data.path_frame):
            raise ConfigError(
                f"--verify-frames reads the frames, but data.path_frame {job.data.path_frame} is not a directory"
            )
        # the videos to verify, and the files' digests and the class list from the same read
        dataset = load_job_dataset(job.data, job.model.num_class)
        known, class_list = dict(dataset.digests), list(dataset.classes)
    elif classes:
        class_list, known[job.data.path_classid] = read_class_list_digest(job.data.path_classid)
    # batching auto takes a cache of either mode, per-step first: the first directory that exists is opened
    modes = (PER_STEP, BATCHED) if job.extract.batching == "auto" else (job.extract.batching,)
    digests = file_digests(job.data, known)  # each file read once, whichever modes are tried
    inputs = [cache_key_inputs(job, digest, mode, digests) for mode in modes]
    cache = open_cache(
        options.cache_root,
        inputs,
        features=options.features,
        data=job.data,
        hint=f" (for the backbone of {job.checkpoints[0]})",
    )
    if dataset is not None:
        from .frames import frames_records  # reads the frames: only here

        geometry = (job.data.num_frames, job.model.clip_length, job.model.clip_stride)
        now = frames_records(dataset.videos, *geometry)
        found = frames_differences(cache.manifest, [v.key for v in dataset.videos], now)
        if found:
            raise CacheError(
                f"the feature cache {cache.directory} was not extracted from the frames under data.path_frame "
                f"{job.data.path_frame}: {'; '.join(found)}. Run frameexit extract (or run) to extract them again"
            )
    return cache, class_list if classes else None
