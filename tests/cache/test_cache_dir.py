"""One definition of a cache directory and its manifest (cache.manifest.FeatureCache): what the writer records is
what a reader opens, reads and checks (issue 21)."""

import os

import numpy as np
import pytest
from helpers import key_inputs

from cache.key import cache_key
from cache.manifest import CacheCorruptError, CacheError, FeatureCache, ShardMissingError, read_manifest
from cache.plan import open_for_writing, shard_attrs
from cache.shard import write_shard

VIDEOS = ["v_a.mp4", "v_b.mp4", "v_c.mp4"]


def _write(root, *, fail=(), **changes):
    """A cache of VIDEOS in shards of two, written as extract writes one; ``fail``: videos skipped while writing."""
    inputs = key_inputs(**changes)
    skipped = [{"video": "v_gone.mp4", "reason": "no frame folder"}]
    with open_for_writing(root, inputs, VIDEOS, shard_size=2, n_listed=4, skipped=skipped) as (cache, checked):
        assert checked.pending == [0, 1] and not cache.manifest.complete
        for i in checked.pending:
            videos = cache.manifest.shards[i].videos
            n = len(videos)
            sha = write_shard(
                cache.shard_path(i),
                videos=videos,
                features=np.full((n, 10, 4), i, dtype=np.float32),
                labels=np.zeros((n, 200), dtype=np.uint8),
                frame_indices=np.zeros((n, 10), dtype=np.int32),
                attrs=shard_attrs(inputs),
            )
            failed = [{"video": v, "reason": "unreadable JPEG"} for v in videos if v in fail]
            cache.record(i, sha, failed, dict.fromkeys(videos, "f" * 32))
        cache.finish()
    return cache, inputs


def test_what_the_writer_records_is_what_a_reader_opens(tmp_path):
    written, inputs = _write(str(tmp_path))
    assert written.directory == os.path.join(str(tmp_path), cache_key(inputs)) and written.key == cache_key(inputs)
    cache = FeatureCache.open(written.directory)
    assert cache.manifest == written.manifest == read_manifest(written.directory)
    assert cache.manifest.complete and cache.manifest.planned() == VIDEOS
    assert [os.path.basename(p) for p, _ in cache.shards()] == ["shard-00000.h5", "shard-00001.h5"]
    shards = list(cache.iter_shards())
    assert [s.videos for s in shards] == [VIDEOS[:2], VIDEOS[2:]]
    assert shards[1].attrs["key"] == cache.key and shards[1].attrs["inputs"] == inputs.to_json()
    assert cache.manifest.usable_videos() == cache.require_features() == 3
    assert [s["video"] for s in cache.manifest.all_skipped()] == ["v_gone.mp4"]


def test_a_reopened_complete_cache_has_nothing_pending(tmp_path):
    written, inputs = _write(str(tmp_path))
    with open_for_writing(str(tmp_path), inputs, VIDEOS, shard_size=2, n_listed=4, skipped=[]) as (cache, checked):
        assert checked.pending == [] and cache.manifest.complete and not checked.replanned
        assert cache.manifest == written.manifest


def test_a_shard_is_read_only_when_it_matches_its_checksum(tmp_path):
    written, inputs = _write(str(tmp_path))
    cache = FeatureCache.open(written.directory)
    path = cache.shard_path(1)
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(CacheCorruptError, match=f"shard {path} is corrupt: its SHA-256 is "):
        cache.read(1)
    assert cache.read(0).videos == VIDEOS[:2]
    # the writer plans the corrupt shard again, and only it
    with open_for_writing(str(tmp_path), inputs, VIDEOS, shard_size=2, n_listed=4, skipped=[]) as (again, checked):
        assert checked.pending == [1] and not again.manifest.complete
    os.unlink(path)
    with pytest.raises(ShardMissingError, match=f"shard {path} is listed in the manifest but missing"):
        cache.read(1)


def test_a_reader_refuses_an_incomplete_cache_or_one_without_a_video(tmp_path):
    inputs = key_inputs()
    with open_for_writing(str(tmp_path), inputs, VIDEOS, shard_size=2, n_listed=3, skipped=[]) as (cache, _):
        cache.record(0, "0" * 64, [], {})
    with pytest.raises(CacheError, match=f"cache {cache.directory} is incomplete"):
        FeatureCache.open(cache.directory)
    with pytest.raises(CacheError, match="is not a frameexit feature cache"):
        FeatureCache.open(str(tmp_path))
    empty, _ = _write(str(tmp_path / "other"), fail=VIDEOS)
    with pytest.raises(CacheError, match=r"holds no video to evaluate: 4 listed in the split, 4 skipped"):
        FeatureCache.open(empty.directory).require_features()
