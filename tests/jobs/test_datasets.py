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


# ---------------------------------------------------------------------------------------------- HVU


def test_hvu_layout_multiple_tags_and_a_video_without_tags(hvu):
    from helpers import HVU_TAGS

    ds = _load(hvu, name="hvu")
    assert [v.key for v in ds.videos] == [
        "ytalpha_000000_000010.mp4",
        "ytbravo_000003_000013.mp4",
        "ytcharlie_000006_000016.mp4",
        "ytdelta_000009_000019.mp4",
        "ytecho_000012_000022.mp4",
        "ytfoxtrot_000015_000025.mp4",
    ]
    # tags separated by '|' inside a quoted field whose tag names hold commas
    assert [v.labels for v in ds.videos] == [tuple(sorted(HVU_TAGS[k])) for k in HVU_TAGS]
    assert [v.labels for v in ds.videos][3] == ()
    assert [(s.video, s.reason.split(" ")[0]) for s in ds.skipped] == [("ytnofolder_000004_000014.mp4", "no")]


def test_hvu_reader_by_hand(tmp_path):
    from jobs.datasets import read_hvu_labels

    csv = tmp_path / "HVU_Val_V1.0.csv"
    csv.write_text(
        "Tags,youtube_id,time_start,time_end\n"
        "dog|grass|running,abc,5,15\n"
        ",noTags,0,10\n"
        "grass|cat,abc,5,15\n"  # the same video again: its tags are added
        "cat,-x_y,123,133\n"
    )
    assert read_hvu_labels(str(csv)) == {
        "abc_000005_000015.mp4": ["dog", "grass", "running", "cat"],
        "noTags_000000_000010.mp4": [],
        "-x_y_000123_000133.mp4": ["cat"],
    }
    assert set(read_hvu_labels(str(csv), "{youtube_id}.mp4")) == {"abc.mp4", "noTags.mp4", "-x_y.mp4"}
    with pytest.raises(DatasetError, match=r"line 2: cannot make a video key with data.key_format '\{nope\}'"):
        read_hvu_labels(str(csv), "{nope}")
    bad = tmp_path / "bad.csv"
    bad.write_text("label,youtube_id,time_start,time_end\n")
    with pytest.raises(DatasetError, match=r"HVU label file .*bad.csv must start with the header Tags,youtube_id"):
        read_hvu_labels(str(bad))


def test_hvu_tag_missing_from_the_class_list_names_video_tag_and_file(hvu, tmp_path):
    classes = tmp_path / "classes.txt"
    names = open(hvu["classes"]).read().splitlines()
    classes.write_text("\n".join(n for n in names if n != names[22]) + "\nspare\n")
    with pytest.raises(DatasetError) as info:
        _load({**hvu, "classes": str(classes)}, name="hvu")
    message = str(info.value)
    assert "ytcharlie_000006_000016.mp4" in message and repr(names[22]) in message and "HVU_Val_V1.0.csv" in message


def test_categories_by_hand(tmp_path):
    from jobs.datasets import read_categories, read_tags

    path = tmp_path / "cat.csv"
    path.write_text('Tag,Category\ndog,object\n"grass, green",scene\nrunning,action\nextra,event\ndog,concept\n')
    classes = ["running", "dog", "grass, green"]
    assert read_categories(str(path), classes) == {"action": (0,), "concept": (1,), "object": (1,), "scene": (2,)}
    assert read_tags(str(path)) == ["dog", "grass, green", "running", "extra"]
    with pytest.raises(DatasetError, match=r"no category for the class\(es\) 'cat' of the class list"):
        read_categories(str(path), [*classes, "cat"])
    path.write_text("Tag,Group\ndog,object\n")
    with pytest.raises(DatasetError, match="must start with the header Tag,Category"):
        read_categories(str(path), classes)


def test_category_map_by_hand():
    import math

    from frameexit.metrics import category_map

    ap = [0.5, float("nan"), 1.0, 0.25]  # class 1 has no positive video
    out = category_map(ap, {"a": (0, 1), "b": (0, 2, 3), "c": (1,)})
    assert out["a"] == 0.5 and out["b"] == pytest.approx((0.5 + 1.0 + 0.25) / 3) and math.isnan(out["c"])
    grid = category_map([[0.5, 1.0], [0.0, float("nan")]], {"a": (0, 1)})  # per setting of a grid
    assert grid["a"].tolist() == [0.75, 0.0]
