"""The `frameexit` command line: one command per stage, each parsing its arguments and calling one `jobs` function.

The options (declared once), their checks, JOB parsing and the error handler are
:mod:`cli_options`'s; summaries are rendered by `reports.text`. Heavy imports (torch,
torchvision, pyarrow) happen inside the commands so that ``frameexit --help`` is instant.
"""

from __future__ import annotations

import click

from cli_options import (
    EXTRACT,
    EXTRACT_KEYS,
    OPTIONS,
    REPLAY,
    REPLAY_KEYS,
    REPORT,
    RUN_REPLAY,
    ExistingPath,
    FrameExitGroup,
    echo_report,
    job_command,
    options,
    out_option,
)


@click.group(cls=FrameExitGroup, context_settings=dict(help_option_names=["-h", "--help"]))
@click.version_option(package_name="frameexit")
@OPTIONS["verbose"]
def main() -> None:
    """Evaluate FrameExit early-exit video models on whole validation sets.

    Sequential inference (infer), cached per-frame features (extract),
    threshold sweeps over them (replay), reports (report), all three at once
    (run), head training (train), the embedded demo (demo) and data
    preparation from raw videos (prepare).

    Nothing is ever downloaded: weights come from checkpoints or files already on disk.

    Exit status of every command: 0 success, 1 error (one line naming the
    file, video or key), 2 usage error, 3 baseline gate failed (report, run),
    130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
    """


@job_command(
    main,
    epilog="""\b
Example:
  frameexit infer jobs/activitynet_inference_2d.yml \\
      --data.path_frame frames/ --data.path_split split_val.txt \\
      --data.path_label activity_net.v1-3.min.json --data.path_classid classes.txt \\
      --checkpoint.init activitynet_checkpoint_25gmac.pth --out runs/anet
  frameexit infer JOB --policy confidence --tau 0.9 --out runs/anet-confidence
""",
)
@out_option("Output directory for videos.parquet and metrics.json.")
@options("device", "policy", "tau", "frames", "progress", "verbose")
def infer(
    job, out_dir: str, device: str, policy: str, tau: float | None, frames: int | None, progress: bool | None
) -> None:
    """Sequential early-exit inference, as the official script computes it.

    Reads each video's frames one at a time in the coarse-to-fine order and
    stops at the first step whose exit rule fires, so frames after the exit
    never go through the backbone (they are only decoded, to check that they
    can be read: a video with an unreadable sampled frame is skipped here as
    in extract, so both evaluate the same videos). Prints mAP, top-1, GFLOPs
    (paper convention), measured GMACs and the exit histogram, and writes
    OUT/videos.parquet (one row per video) and OUT/metrics.json. Split videos
    without frames are skipped and listed with the reason.

    Exit policies (--policy): frameexit, the gates (step 0 exits when its top
    probability is > model.first_threshold, steps 1..T-2 when the gate output
    is < model.gate_threshold, step T-1 always); confidence, the first step
    whose top probability is > --tau; fixed, --frames K for every video;
    oracle, the earliest step whose top class is one of the video's labels
    (step 0 if none is; it runs every step to know, so reads every frame).
    The baselines are what FrameExit should beat at equal cost; replay
    computes them all over cached features, with the same results.
    """
    from jobs.infer import infer as run_infer
    from reports.text import render_infer_summary

    result = run_infer(job, out_dir, device=device, progress=progress, policy=policy, tau=tau, frames=frames)
    click.echo(render_infer_summary(result))


@job_command(
    main,
    epilog="""\b
Examples:
  frameexit extract jobs/activitynet_inference_2d.yml --data.path_frame frames/ \\
      --checkpoint.init activitynet_checkpoint_25gmac.pth --data.num_workers 8
  frameexit extract JOB --scheduler tcp://10.0.0.5:8786     # shards on a dask cluster
""",
)
@options("progress", "verbose", job_keys=EXTRACT_KEYS, extract_options=EXTRACT)
def extract(job, extract_options, progress: bool | None) -> None:
    """Cache per-frame backbone features of every sampled frame in HDF5 shards.

    All 10 sampled frames of every video go through the backbone once, on CUDA
    when present: one step per forward pass on a CPU (--batching auto: features
    equal frameexit infer's bit for bit), in batches of several videos on CUDA
    (their deviation from infer's measured on probe videos). The cache
    directory is named by a key of everything the features, videos and labels
    depend on (backbone weights, preprocessing, sampling, dtype, precision,
    memory format, batching, dataset files, key format), so an interrupted run
    resumes from its finished shards and a changed input gets a new directory.
    The frames are recorded per video (the bytes of the files read): a rerun
    reads them again and extracts only the shards whose frames changed, or
    whose videos could not be read before and can be now; otherwise it does no
    backbone work. Videos without frames or with unreadable JPEGs are recorded
    with the reason in manifest.json and listed at the end. With several GPUs,
    shards are spread over one dask-cuda worker per GPU (pip install '.[gpu]').
    """
    from jobs.extract import extract as run_extract
    from reports.text import render_extract_summary

    click.echo(render_extract_summary(run_extract(job, extract_options, progress=progress)))


@job_command(
    main,
    epilog="""\b
Examples:
  frameexit replay JOB --out runs/sweep --first-thresholds 0.9,0.95,0.99 --gate-thresholds 0.1:0.9:33
  frameexit replay JOB --out runs/ablation --order sequential
  frameexit replay JOB --checkpoint.init '[beta1e-3.pth, beta1e-5.pth]' --out runs/betas
""",
)
@out_option("Output directory for sweep.parquet, videos.parquet and replay.json.")
@options("progress", "verbose", job_keys=REPLAY_KEYS, replay_options=REPLAY)
def replay(job, out_dir: str, replay_options, progress: bool | None) -> None:
    """Sweep exit thresholds over cached features: milliseconds per operating point.

    Reads the feature cache of JOB (written by frameexit extract), computes
    once per shard and checkpoint head everything any threshold needs
    (projection, pooling in policy order, all classifiers and gates: the exit
    tables, kept in the cache for the next replay of the checkpoint, which
    reads them instead of running its head; --exit-tables off: neither), then
    every setting of the grid FIRST_THRESHOLDS x GATE_THRESHOLDS: exit steps,
    mAP, top-1, GFLOPs (paper convention), measured GMACs, mean frames and the
    exit histogram. The cache is CACHE/<key>, the key computed from the job,
    its first checkpoint and the extraction settings (the job's extract.*
    keys, or the options that set them: give those extract was given); the
    frames are not read (--verify-frames compares them with the cache's
    record). Several checkpoints (checkpoint.init as a list) replay over one
    cache when they share its backbone weights. Over a per-step cache, results
    equal those of frameexit infer with the same thresholds, video by video;
    over a batched one, replay.json names the videos whose decision the
    measured deviation could change.
    """
    from jobs.replay import replay as run_replay
    from reports.text import render_replay_summary

    click.echo(render_replay_summary(run_replay(job, out_dir, replay_options, progress=progress)))


@main.command(
    epilog="""\b
Exit status: 0, or 3 when the --baseline gate fails: a drop or rise beyond
--max-drop / --max-cost-rise (with --significance LEVEL, a drop only when
the paired bootstrap's interval of it lies above --max-drop), a baseline
checkpoint missing from this run,
other videos evaluated than the baseline's (more than --accept-missing N),
or nothing compared (1 for errors, 2 for usage errors). With a difference
accepted, top-1 and cost are compared over the videos both evaluated and
mAP is not compared. A baseline or --calibrate-on run of another dataset,
class list or checkpoints is an error (1); a calibration run must evaluate
other videos than this run (another split).
\b
Examples:
  frameexit report --out runs/anet
  frameexit report --out runs/anet --budget 20 --calibrate-on runs/anet-heldout
  frameexit report --out runs/anet --baseline main/summary.json --max-drop 0.005 --max-cost-rise 0.5
  frameexit report --out runs/anet --baseline main/summary.json --max-drop 0.005 --accept-missing 19
  frameexit report --out runs/anet --baseline main/summary.json --max-drop 0.005 --significance 0.95
"""
)
@out_option("Directory of a replay (sweep.parquet, replay.json); the report is written there too.", exists=True)
@options("verbose", report_options=REPORT)
def report(out_dir: str, report_options) -> None:
    """Write summary.md, summary.json and curve.png from a replay's outputs.

    summary.md holds the results table at the job's setting, the Pareto
    frontier of the sweep, the exit histogram, the evaluated and skipped videos
    and the provenance (checkpoint digests, cache key, dataset files,
    versions); summary.json the same facts for machines; curve.png accuracy
    (mAP for ActivityNet, top-1 for Mini-Kinetics) against GFLOPs, with the
    published FrameExit curve for the ResNet-50 ActivityNet job.
    """
    from jobs.report import report as run_report
    from reports.text import render_report_summary

    result = run_report(out_dir, report_options)
    echo_report(render_report_summary(result), result)


@job_command(
    main,
    epilog="""\b
Exit status: 0, or 3 when the baseline gate finds a regression.
\b
Example:
  frameexit run jobs/activitynet_inference_2d.yml --data.path_frame ... --checkpoint.init ... \\
      --gate-thresholds 0:1:21 --first-thresholds 0.5:1:11 --out runs/anet
""",
)
@out_option("Output directory for every artefact.")
@options(
    "progress",
    "verbose",
    job_keys=(*EXTRACT_KEYS, *REPLAY_KEYS),
    extract_options=EXTRACT,
    replay_options=RUN_REPLAY,
    report_options=REPORT,
)
def run(job, out_dir: str, extract_options, replay_options, report_options, progress: bool | None) -> None:
    """The whole job: extract (reusing the cache), replay, report.

    Accepts the options of the three stages and the official config files
    as job files; prints one progress display per stage and, at the end,
    where the artefacts are: OUT/sweep.parquet, OUT/videos.parquet,
    OUT/replay.json, OUT/summary.md, OUT/summary.json and OUT/curve.png.
    """
    from jobs.run import run as run_job
    from reports.text import render_extract_summary, render_replay_summary, render_run_summary

    renderers = {"extract": render_extract_summary, "replay": render_replay_summary}
    result = run_job(
        job,
        out_dir,
        extract_options=extract_options,
        replay_options=replay_options,
        report_options=report_options,
        progress=progress,
        on_stage=lambda name, result: click.echo(renderers[name](result)) if name in renderers else None,
    )
    echo_report(render_run_summary(out_dir, result.report), result.report)


@job_command(
    main,
    epilog="""\b
Examples:
  frameexit train jobs/activitynet_inference_2d.yml --data.path_split split_train.txt \\
      --checkpoint.init backbone.pth --train.beta 1e-3 --out frameexit_beta1e-3.pth
  frameexit train JOB --train.val_path_split split_val.txt --train.epochs_classifier 40 --out head.pth
""",
)
@out_option("Checkpoint file to write.", directory=False)
@options("progress", "verbose", job_keys=("num_workers",), extract_options=("cache_root", "device"))
def train(job, out_path: str, extract_options, progress: bool | None) -> None:
    """Train a FrameExit head (projection, classifiers, gates) on cached features.

    Extracts the features of the job's split (data.path_split, a training
    split) with the backbone of checkpoint.init, or reuses them, then trains
    in two stages: projection and the 10 classifiers with cross-entropy at
    every step; then the 9 gates on pseudo-labels (exit at step t when that
    step's loss is at most train.beta * exp(t / 2)). The checkpoint is written
    in the official format with the backbone weights, so infer, replay and the
    official code load it. Hyper-parameters are the job's train.* keys:
    epochs_classifier (20), epochs_gates (10), batch_size (64), lr (1e-3),
    lr_gates (1e-3), weight_decay (0), beta (1e-3), loss (softmax|bce),
    seed (0), hidden_dim (4096), val_path_split (none: no validation).
    """
    from jobs.train import train as run_train
    from reports.text import render_train_summary

    click.echo(render_train_summary(run_train(job, out_path, extract_options=extract_options, progress=progress)))


@main.command(
    epilog="""\b
Example:
  frameexit demo --out demo-out     # under 5 minutes on 2 CPU cores
"""
)
@out_option("Directory for the demo's data, cache, checkpoints and report.", default="demo-out", show_default=True)
@options("progress", "verbose")
def demo(out_dir: str, progress: bool | None) -> None:
    """The whole method on an embedded synthetic dataset; needs nothing but this package.

    Generates 1,500 short videos in the ActivityNet layout (1,200 training,
    300 validation; 12 classes: a shape in a colour; easy videos show it in
    every frame, hard ones, 30 %, in 4 of the 10 sampled frames), uses a
    ResNet-18 with a fixed-seed random initialisation (no pretrained weights
    are downloaded), extracts features of both splits, trains FrameExit heads
    for two values of beta, replays a threshold sweep on the validation split
    for each, and writes the report with the accuracy/GFLOPs curve.
    """
    from jobs.demo import demo as run_demo
    from reports.text import render_demo_summary

    click.echo(render_demo_summary(run_demo(out_dir, progress=progress, say=lambda s: click.echo(s, err=True))))


@main.group(cls=FrameExitGroup)
@OPTIONS["verbose"]
def prepare() -> None:
    """From raw videos and annotation files to the official frame folders and split files."""


@prepare.command(
    "frames",
    short_help="Videos to the official frame folders, by the official ffmpeg command.",
    epilog="""\b
Examples:
  frameexit prepare frames videos/activitynet/ \\
      data/activitynet_v1.3/fps1_res350_hq --dataset activitynet --workers 8
  frameexit prepare frames videos/kinetics_val/ \\
      data/minikinetics/fps5_res256_hq --dataset minikinetics
""",
)
@click.argument("videos_dir", type=ExistingPath(file_okay=False))
@click.argument("frames_dir", type=click.Path(file_okay=False))
@options("dataset", "decoders", "prefix", "ffmpeg", "progress", "verbose")
def prepare_frames(
    videos_dir: str, frames_dir: str, dataset: str, decoders: int, prefix: str, ffmpeg: str | None, progress
) -> None:
    """Decode every video of VIDEOS_DIR into FRAMES_DIR/KEY/PREFIX_00001.jpeg, ...

    KEY is the video's split key, its file name with the extension .mp4
    (v_abc.mkv is written to v_abc.mp4/), as the split files name videos.
    Runs the official command line itself for each video: ffmpeg -i VIDEO -vf
    fps=R,scale=S:S:force_original_aspect_ratio=increase -q:v 2
    FRAMES_DIR/KEY/PREFIX_%05d.jpeg, with --ffmpeg, else the ffmpeg on PATH,
    else the one imageio-ffmpeg bundles. The command and the FFmpeg version
    are recorded in FRAMES_DIR/prepare-frames.json; a run that would add
    frames with another command or FFmpeg version stops before any work.
    Resumable: videos whose folder has frames are skipped, folders that a
    killed run left half written are redone; each folder is renamed into
    place when complete. Videos shorter than one frame are listed (no
    frames, as with the official command). A video that cannot be decoded
    does not stop the others: the failures are listed at the end, with exit
    status 1.
    """
    from jobs.ffmpeg import ffmpeg_filter
    from jobs.prepare import PrepareError, prepare_dataset, prepare_frames
    from jobs.progress import progress as bar
    from reports.text import render_frames_summary

    result = prepare_frames(
        videos_dir,
        frames_dir,
        dataset=dataset,
        workers=decoders,
        prefix=prefix,
        ffmpeg=ffmpeg,
        progress=lambda it, n: bar(it, desc="prepare frames", total=n, enabled=progress),
    )
    preset = prepare_dataset(dataset).frames_preset
    click.echo(render_frames_summary(result, ffmpeg_filter=ffmpeg_filter(**preset), frames_dir=frames_dir))
    if result.failed:
        raise PrepareError(f"{len(result.failed)} video(s) failed (listed above with the reason)")


@prepare.command(
    "splits",
    short_help="The validation split file and a class list from annotations.",
    epilog="""\b
Examples:
  frameexit prepare splits data/activitynet/activity_net.v1-3.min.json \\
      --dataset activitynet --out data/activitynet/split_val_v1.3.txt \\
      --classes-out data/activitynet/classes.txt
  frameexit prepare splits data/minikinetics/kinetics_val.csv \\
      --dataset minikinetics \\
      --val-list data/minikinetics/mini_val_videofolder.txt \\
      --out data/minikinetics/split_val_minikinetics.txt \\
      --classes-out data/minikinetics/minik_classInd.txt
  frameexit prepare splits data/hvu/HVU_Val_V1.0.csv --dataset hvu \\
      --categories data/hvu/HVU_Tags_Categories_V1.0.csv \\
      --out data/hvu/split_val_hvu.txt --classes-out data/hvu/hvu_classes.txt
""",
)
@click.argument("annotation", type=ExistingPath(dir_okay=False))
@out_option("Split file to write.", directory=False)
@options("dataset", "val_list", "categories", "key_format", "classes", "classes_out", "verbose")
def prepare_splits(
    annotation, dataset: str, out_path: str, val_list, categories, key_format, classes, classes_out
) -> None:
    """Build the validation split file from ANNOTATION, as the official help text describes.

    ActivityNet: every video whose subset is validation, as v_<id>.mp4.

    Mini-Kinetics: the videos of mini_val_videofolder.txt found in the
    Kinetics CSV.

    HVU: every video of the annotation CSV (HVU_Val_V1.0.csv), as
    <youtube_id>_<start:06d>_<end:06d>.mp4 (or --key-format).

    With --classes, labels missing from that class list are listed. With
    --classes-out, the class list is written: ActivityNet, every label of
    the JSON (200); Mini-Kinetics, the labels of the split's videos (the CSV
    holds all 400 Kinetics classes); HVU, every tag of --categories (3,142),
    else the tags of the CSV; sorted by Python string order. The class
    index is the line number, and a checkpoint's outputs follow the class list
    it was trained with; the official repository does not publish its lists,
    so with the released checkpoints use the official list if you have it
    (check it with --classes).
    """
    from jobs.prepare import build_split
    from reports.text import render_splits_summary
    from reports.write import write_lines

    split = build_split(
        annotation, dataset=dataset, val_list=val_list, classes=classes, categories=categories, key_format=key_format
    )
    write_lines(out_path, split.keys)
    if classes_out:
        write_lines(classes_out, split.classes)
    click.echo(render_splits_summary(split, out_path=out_path, classes=classes, classes_out=classes_out))


@job_command(
    prepare,
    "check",
    short_help="Before a long run: is every split video ready to evaluate?",
    epilog="""\b
Example:
  frameexit prepare check jobs/activitynet_inference_2d.yml \\
      --data.path_frame data/activitynet_v1.3/fps1_res350_hq --max-missing 5
""",
)
@options("max_missing", "verbose")
def prepare_check(job, max_missing: int) -> None:
    """Before a long run: split videos with frames, missing or empty folders, videos without a label entry,
    unknown labels, frame counts.

    Prints a summary, then fails (exit status 1) if more than --max-missing
    split videos would be skipped (no frames, or no entry in the label file)
    or if a label is not in the class list.
    """
    from jobs.prepare import PrepareError, check
    from reports.text import render_check_summary

    result = check(job)
    click.echo(render_check_summary(result))
    failure = result.failure(max_missing)
    if failure:
        raise PrepareError(failure)


if __name__ == "__main__":
    main()
