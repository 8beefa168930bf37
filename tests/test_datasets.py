"""SEMANTICS 1-2: which videos are evaluated, their labels, and the skipped list."""

import json
import os
import shutil

import pytest
from helpers import load_fixture

from frameexit.errors import DatasetError, DatasetFileNotFoundError
from jobs.datasets import (
    list_frames,
    minikinetics_key,
    read_activitynet_labels,
    read_class_list,
    read_minikinetics_labels,
    read_split,
)


def _load(paths, name="activitynet1.3", num_class=200):
    return load_fixture(paths, name, num_class)


def test_activitynet_layout(anet):
    ds = _load(anet)
    keys = [v.key for v in ds.videos]
    assert (
        keys
        == sorted(keys)
        == ["v_alpha.mp4", "v_bravo.mp4", "v_charlie.mp4", "v_delta.mp4", "v_echo.mp4", "v_foxtrot.mp4"]
    )
    by_key = {v.key: v for v in ds.videos}
    assert by_key["v_charlie.mp4"].labels == (3, 7)  # multi-label
    assert by_key["v_delta.mp4"].labels == ()  # annotated with no label
    assert len(by_key["v_bravo.mp4"].frames) == 4
    assert by_key["v_alpha.mp4"].frames == tuple(sorted(by_key["v_alpha.mp4"].frames))
    assert ds.n_listed == 8
    reasons = {s.video: s.reason for s in ds.skipped}
    assert set(reasons) == {"v_empty.mp4", "v_nofolder.mp4"}
    assert reasons["v_empty.mp4"].startswith("no *.jpeg frames in ")
    assert reasons["v_nofolder.mp4"].startswith("no frame folder ")


def test_minikinetics_layout(minik):
    ds = _load(minik, name="minikinetics")
    assert [v.key for v in ds.videos] == [
        "ytalpha_000001_000011.mp4",
        "ytbravo_000008_000018.mp4",
        "ytcharlie_000015_000025.mp4",
        "ytdelta_000022_000032.mp4",
    ]
    assert [v.labels for v in ds.videos] == [(3,), (7,), (3,), (0,)]
    assert [s.video for s in ds.skipped] == ["ytnofolder_000005_000015.mp4"]


def test_minikinetics_key_and_quotes(tmp_path):
    assert minikinetics_key("abc", "5.0", "15.0") == "abc_000005_000015.mp4"
    assert minikinetics_key("-x_y", "123.7", "133.2") == "-x_y_000123_000133.mp4"  # integer part, not rounded
    csv = tmp_path / "k.csv"
    csv.write_text(
        'label,youtube_id,time_start,time_end,split,is_cc\n"playing chess",ab,1.0,11.0,val,0\n'
        "ice skating,cd,20,30,val,0\n"
    )
    assert read_minikinetics_labels(str(csv)) == {
        "ab_000001_000011.mp4": ["playing chess"],
        "cd_000020_000030.mp4": ["ice skating"],
    }
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n")
    with pytest.raises(DatasetError, match="bad.csv must start with the header label,youtube_id"):
        read_minikinetics_labels(str(bad))


def test_activitynet_json(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(
        json.dumps(
            {
                "database": {
                    "x1": {"annotations": [{"label": "A"}, {"label": "B"}, {"label": "A"}]},
                    "x2": {"annotations": []},
                }
            }
        )
    )
    assert read_activitynet_labels(str(path)) == {"v_x1.mp4": ["A", "B", "A"], "v_x2.mp4": []}
    path.write_text("{")
    with pytest.raises(DatasetError, match="a.json is not valid JSON"):
        read_activitynet_labels(str(path))
    path.write_text(json.dumps({"taxonomy": []}))
    with pytest.raises(DatasetError, match="no 'database'"):
        read_activitynet_labels(str(path))


def test_class_list_and_split(tmp_path):
    classes = tmp_path / "c.txt"
    classes.write_text("  Archery \nBaking cookies\n\n")
    assert read_class_list(str(classes)) == ["Archery", "Baking cookies"]  # stripped, trailing blank ignored
    classes.write_text("A\nB\nA\n")
    with pytest.raises(DatasetError, match="'A' appears on lines 1 and 3"):
        read_class_list(str(classes))
    split = tmp_path / "s.txt"
    split.write_text(" v_b.mp4\n\nv_a.mp4\n")
    assert read_split(str(split)) == ["v_b.mp4", "v_a.mp4"]  # file order, stripped, blank lines ignored
    with pytest.raises(DatasetFileNotFoundError, match=r"split file not found: .*nope.txt \(from data.path_split\)"):
        read_split(str(tmp_path / "nope.txt"))


def test_duplicate_split_key_is_an_error(tmp_path):
    split = tmp_path / "s.txt"
    split.write_text("v_b.mp4\n\nv_a.mp4\nv_b.mp4 \n")
    # the evaluation must not silently differ from what the file says
    with pytest.raises(DatasetError, match=r"split file .*s.txt: 'v_b.mp4' appears on lines 1 and 4"):
        read_split(str(split))


def test_folder_named_after_the_video_file_is_hinted(anet, tmp_path):
    frames = tmp_path / "frames"
    shutil.copytree(anet["frames"], frames)
    os.rename(frames / "v_alpha.mp4", frames / "v_alpha.webm")  # named after the downloaded file
    ds = _load({**anet, "frames": str(frames)})
    reason = {s.video: s.reason for s in ds.skipped}["v_alpha.mp4"]
    assert reason.startswith("no frame folder ")
    assert reason.endswith("(found v_alpha.webm: frame folders are named by split key; rename it to v_alpha.mp4)")
    assert {s.video: s.reason for s in ds.skipped}["v_nofolder.mp4"].endswith("v_nofolder.mp4")  # no hint


def test_only_jpeg_files_count(tmp_path):
    folder = tmp_path / "v_x.mp4"
    folder.mkdir()
    for name in ("img_00002.jpeg", "img_00001.jpeg", "img_00003.jpg", "img_00004.png", "notes.txt"):
        (folder / name).write_bytes(b"")
    assert [os.path.basename(p) for p in list_frames(str(tmp_path), "v_x.mp4")] == ["img_00001.jpeg", "img_00002.jpeg"]


def test_unknown_label_names_video_label_and_file(anet, tmp_path):
    doc = json.load(open(anet["labels"]))
    doc["database"]["bravo"]["annotations"][0]["label"] = "Underwater basket weaving"
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(doc))
    with pytest.raises(
        DatasetError,
        match=r"video v_bravo.mp4: label 'Underwater basket weaving' from .*labels.json "
        r"is not in the class list .*classes.txt",
    ):
        _load({**anet, "labels": str(labels)})


def test_video_missing_from_label_file_is_skipped(anet, tmp_path):
    doc = json.load(open(anet["labels"]))
    del doc["database"]["echo"]
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(doc))
    ds = _load({**anet, "labels": str(labels)})
    assert {s.video: s.reason for s in ds.skipped}["v_echo.mp4"].startswith("no entry in the label file")


def test_class_count_must_match(anet):
    with pytest.raises(DatasetError, match="has 200 classes but model.num_class is 100"):
        _load(anet, num_class=100)
    with pytest.raises(DatasetFileNotFoundError, match="frames root not found"):
        _load({**anet, "frames": anet["frames"] + "-nope"})
