"""SEMANTICS 9: official checkpoint format, weights_only loading, mismatches, export round trip."""

import os
import pickle

import pytest
import torch
import torchvision
from helpers import official_head_shapes, official_state

from frameexit.backbone import build_backbone
from frameexit.checkpoint import (
    backbone_digest,
    build_model,
    head_shape,
    official_state_dict,
    read_state_dict,
    save_checkpoint,
)
from frameexit.errors import CheckpointError
from frameexit.head import FrameExit


def test_reads_with_and_without_module_prefix(tmp_path):
    state = official_state("resnet18", seed=4)
    with_prefix, without = tmp_path / "a.pth", tmp_path / "b.pth"
    torch.save(state, with_prefix)
    torch.save({k[len("module.") :]: v for k, v in state.items()}, without)
    a, b = read_state_dict(with_prefix), read_state_dict(without)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert "mlp.layers.0.weight" in a
    shape = head_shape(a)
    assert (shape.feat_dim, shape.hidden_dim, shape.num_class, shape.num_steps) == (512, 4096, 200, 10)
    model = build_model(a, backbone_name="torchvision.resnet18")
    assert torch.equal(model.backbone.state_dict()["0.weight"], state["module.backbone.0.weight"])
    assert torch.equal(model.exit_selector[3].bn2.running_var, state["module.exit_selector.3.bn2.running_var"])


def test_mismatch_lists_missing_and_unexpected_keys():
    state = {k[len("module.") :]: v for k, v in official_state("resnet18", seed=4).items()}
    del state["classifiers.9.bias"]
    state["exit_selector.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        build_model(state, backbone_name="torchvision.resnet18", path="ckpt.pth")
    msg = str(err.value)
    assert "ckpt.pth" in msg
    assert "missing keys (1): module.classifiers.9.bias" in msg
    assert "unexpected keys (1): module.exit_selector.0.extra.weight" in msg


def test_wrong_backbone_is_named():
    state = {k[len("module.") :]: v for k, v in official_state("resnet18", seed=4).items()}
    with pytest.raises(CheckpointError, match=r"missing keys \(\d+\): .*module.backbone.4.0.conv3.weight"):
        build_model(state, backbone_name="torchvision.resnet50")
    state["classifiers.2.weight"] = torch.zeros(200, 1000)
    with pytest.raises(CheckpointError, match=r"shapes differ: module.classifiers.2.weight \(200, 1000\)"):
        build_model(state, backbone_name="torchvision.resnet18")


class Payload:
    def __reduce__(self):
        return (os.getcwd, ())


def test_weights_only_refuses_pickled_code_and_bad_files(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"module.x": torch.zeros(1), "obj": Payload()}, evil)
    with pytest.raises(CheckpointError, match=r"evil.pth with weights_only=True"):
        read_state_dict(evil)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        read_state_dict(junk)
    with pytest.raises(CheckpointError, match="not found: .*absent.pth"):
        read_state_dict(tmp_path / "absent.pth")
    listy = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listy)
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        read_state_dict(listy)
    with pytest.raises(CheckpointError, match="not a FrameExit checkpoint: missing key"):
        head_shape({"backbone.0.weight": torch.zeros(1)})
    assert pickle  # imported for clarity of the payload's purpose


def test_export_round_trip_in_the_official_format(tmp_path):
    original = official_state("resnet18", seed=5)
    model = build_model(read_state_dict(_save(tmp_path / "in.pth", original)), backbone_name="torchvision.resnet18")
    out = tmp_path / "out.pth"
    save_checkpoint(model, out)
    raw = torch.load(out, weights_only=True)
    assert set(raw) == set(original)  # every key module.-prefixed, nothing added or lost
    assert all(torch.equal(raw[k], original[k]) for k in raw)
    again = build_model(read_state_dict(out), backbone_name="torchvision.resnet18")
    x = torch.rand(2, 10, 512)
    with torch.no_grad():
        torch.testing.assert_close(again.exit_tables(x), model.exit_tables(x), rtol=0, atol=0)


def _save(path, state):
    torch.save(state, path)
    return path


def test_resnet50_key_layout_is_the_official_one():
    with torch.device("meta"):
        model = FrameExit(build_backbone("torchvision.resnet50"), 2048, 200)
        net = torchvision.models.resnet50()
    keys = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {
        f"backbone.{i}.{k}": tuple(v.shape)
        for i, c in enumerate(list(net.children())[:-1])
        for k, v in c.state_dict().items()
    }
    expected.update(official_head_shapes(2048))
    assert keys == expected
    # spot checks from SEMANTICS 9: 0 conv1, 1 bn1, 4..7 layer1..4
    assert keys["backbone.0.weight"] == (64, 3, 7, 7)
    assert keys["backbone.1.running_mean"] == (64,)
    assert keys["backbone.7.2.conv3.weight"] == (2048, 512, 1, 1)
    assert keys["mlp.layers.0.weight"] == (4096, 2048)


def test_official_state_dict_prefixes_every_key():
    state = {k[len("module.") :]: v for k, v in official_state("resnet18", seed=6).items()}
    model = build_model(state, backbone_name=None)
    assert all(k.startswith("module.") for k in official_state_dict(model))
    assert not any(k.startswith("module.backbone.") for k in official_state_dict(model))


def test_backbone_digest_depends_on_backbone_weights_only():
    a = {k[len("module.") :]: v for k, v in official_state("resnet18", seed=7).items()}
    b = dict(a)
    b["classifiers.0.bias"] = b["classifiers.0.bias"] + 1
    assert backbone_digest(a) == backbone_digest(b)
    b["backbone.0.weight"] = b["backbone.0.weight"].clone()
    b["backbone.0.weight"][0, 0, 0, 0] += 1e-3
    assert backbone_digest(a) != backbone_digest(b)


def test_non_finite_weights_are_refused_naming_file_and_keys(tmp_path):
    state = official_state("resnet18", seed=8)
    state["module.classifiers.3.weight"][0, :12] = float("nan")
    state["module.mlp.layers.0.bias"][:2] = float("inf")
    state["module.mlp.layers.0.bias"][2] = float("-inf")
    state["module.mlp.layers.0.bias"][3] = float("nan")
    path = _save(tmp_path / "diverged.pth", state)
    with pytest.raises(CheckpointError) as err:
        read_state_dict(path)
    msg = str(err.value)
    assert f"checkpoint {path}: non-finite values in " in msg
    assert "module.classifiers.3.weight (12 NaN)" in msg
    assert "module.mlp.layers.0.bias (1 NaN, 3 inf)" in msg
    assert "backbone" not in msg  # only the offending tensors are named

    # half precision is checked too; integer counters (num_batches_tracked) are not floating and pass
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in official_state("resnet18", seed=8).items()}
    assert half["module.exit_selector.0.bn1.num_batches_tracked"].dtype == torch.int64
    read_state_dict(_save(tmp_path / "half.pth", half))
    half["module.backbone.0.weight"][0, 0, 0, 0] = 70000.0  # overflows float16 to inf
    with pytest.raises(CheckpointError, match=r"half.pth: non-finite values in module.backbone.0.weight \(1 inf\)"):
        read_state_dict(_save(tmp_path / "half.pth", half))


def test_non_finite_listing_is_bounded():
    from frameexit.checkpoint import check_finite

    state = {f"classifiers.{i}.weight": torch.full((2, 2), float("nan")) for i in range(9)}
    with pytest.raises(CheckpointError) as err:
        check_finite(state, path="many.pth")
    msg = str(err.value)
    assert msg.startswith("checkpoint many.pth: non-finite values in module.classifiers.0.weight (4 NaN)")
    assert "module.classifiers.4.weight" in msg and "module.classifiers.5.weight" not in msg
    assert "(4 more tensors)" in msg
    check_finite({"mlp.layers.1.num_batches_tracked": torch.tensor(3)}, path="ok.pth")  # integers pass


def test_save_checkpoint_refuses_non_finite_weights(tmp_path):
    state = {k[len("module.") :]: v for k, v in official_state("resnet18", seed=9).items()}
    model = build_model(state, backbone_name=None)
    with torch.no_grad():
        model.exit_selector[2].linear.weight[0, 0] = float("nan")
    out = tmp_path / "out.pth"
    with pytest.raises(CheckpointError) as err:
        save_checkpoint(model, out)
    msg = str(err.value)
    assert str(out) in msg and "module.exit_selector.2.linear.weight (1 NaN)" in msg
    assert not out.exists() and os.listdir(tmp_path) == []  # nothing written, no temporary left
