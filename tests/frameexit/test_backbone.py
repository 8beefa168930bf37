"""SEMANTICS 5 (backbone) and the no-download rule."""

import os

import pytest
import torch
import torchvision

from frameexit.backbone import (
    build_backbone,
    feature_dim,
    imagenet_state_dict,
    imagenet_weights_path,
    model_name,
    random_backbone,
)
from frameexit.errors import BackboneError


def test_names_as_in_the_official_configs():
    assert model_name("torchvision.resnet50") == "resnet50"
    assert model_name("efficientnet_b3") == "efficientnet_b3"
    with pytest.raises(BackboneError, match=r"'torchvision.resnet5' is not .*Did you mean torchvision.resnet50"):
        model_name("torchvision.resnet5")


@pytest.mark.parametrize(
    "name, dim, size",
    [
        ("torchvision.resnet50", 2048, 224),
        ("torchvision.efficientnet_b3", 1536, 300),
        ("torchvision.resnet18", 512, 224),
    ],
)
def test_truncated_feature_dims(name, dim, size):
    assert feature_dim(name, input_size=size) == dim


def test_truncation_keeps_children_but_the_last_and_pools():
    net = torchvision.models.resnet18()
    backbone = random_backbone("torchvision.resnet18", seed=0)
    assert len(list(backbone.children())) == len(list(net.children())) - 1
    assert "4.0.conv1.weight" in backbone.state_dict()  # layer1 is child 4, as in the official keys
    # truncating one more child (the average pool) leaves a spatial map, which is then average-pooled
    shorter = random_backbone("torchvision.resnet18", seed=0, truncate_modules=-2)
    shorter.load_state_dict(backbone.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(shorter.eval()(x), backbone.eval()(x))
    with pytest.raises(BackboneError, match="truncate_modules"):
        build_backbone("torchvision.resnet18", truncate_modules=0)


def test_random_backbone_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = random_backbone("torchvision.resnet18", seed=5).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    b = random_backbone("torchvision.resnet18", seed=5).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_imagenet_weights_never_downloaded():
    # conftest points TORCH_HOME at an empty folder and makes any download fail the test
    path = imagenet_weights_path("torchvision.resnet18")
    assert not os.path.exists(path)
    with pytest.raises(BackboneError, match=r"not on disk \(expected .*resnet18-.*\.pth\).*never downloads"):
        imagenet_state_dict("torchvision.resnet18")


def test_imagenet_weights_read_from_disk_when_present():
    net = torchvision.models.resnet18()
    path = imagenet_weights_path("torchvision.resnet18")
    os.makedirs(os.path.dirname(path))
    torch.save(net.state_dict(), path)
    state = imagenet_state_dict("torchvision.resnet18")
    assert torch.equal(state["0.weight"], net.conv1.weight)
    assert torch.equal(state["7.1.bn2.running_var"], net.layer4[1].bn2.running_var)
    assert not any(k.startswith("fc") or k.startswith("9.") for k in state)
