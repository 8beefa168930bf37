"""SEMANTICS 5 (head): projection, accumulated max pooling, gates on [phi(z_t), phi(z_{t-1})], classifiers."""

import torch
import torch.nn.functional as F
from helpers import official_state

from frameexit.checkpoint import build_model
from frameexit.head import Gate


def _bn(x, state, p):
    return F.batch_norm(
        x,
        state[p + ".running_mean"],
        state[p + ".running_var"],
        state[p + ".weight"],
        state[p + ".bias"],
        training=False,
        eps=1e-5,
    )


def test_exit_tables_match_the_equations_written_out():
    state = {k[len("module.") :]: v for k, v in official_state("resnet18", seed=3).items()}
    model = build_model(state, backbone_name=None)
    torch.manual_seed(0)
    feats = torch.randn(5, 10, 512).abs()
    with torch.no_grad():
        probs, gates = model.exit_tables(feats)

        h = F.relu(
            _bn(
                F.linear(feats, state["mlp.layers.0.weight"], state["mlp.layers.0.bias"]).reshape(50, -1),
                state,
                "mlp.layers.1",
            )
        ).reshape(5, 10, -1)
        z = [h[:, 0]]
        for t in range(1, 10):
            z.append(torch.maximum(z[-1], h[:, t]))  # z_t = max(z_{t-1}, h_t)
        for t in range(10):
            logits = F.linear(z[t], state[f"classifiers.{t}.weight"], state[f"classifiers.{t}.bias"])
            torch.testing.assert_close(probs[:, t], F.softmax(logits, 1), rtol=1e-5, atol=1e-6)

        def phi(v, p):
            x = F.relu(
                _bn(F.conv2d(v[:, :, None, None], state[p + "conv1.weight"], state[p + "conv1.bias"]), state, p + "bn1")
            )
            return F.relu(
                _bn(F.conv2d(x, state[p + "conv2.weight"], state[p + "conv2.bias"]), state, p + "bn2")
            ).flatten(1)

        for t in range(1, 10):
            p = f"exit_selector.{t - 1}."
            both = torch.cat([phi(z[t], p), phi(z[t - 1], p)], 1)  # z_t first, then z_{t-1}
            s = torch.sigmoid(F.linear(both, state[p + "linear.weight"], state[p + "linear.bias"]))[:, 0]
            torch.testing.assert_close(gates[:, t - 1], s, rtol=1e-5, atol=1e-6)
    assert probs.shape == (5, 10, 200) and gates.shape == (5, 9)


def test_batchnorm_runs_in_eval_mode():
    state = {k[len("module.") :]: v for k, v in official_state("resnet18", seed=3).items()}
    model = build_model(state, backbone_name=None)
    assert not model.training and not any(m.training for m in model.modules())
    one = model.exit_tables(torch.rand(1, 10, 512))[0]  # a batch of one works only with running statistics
    assert torch.isfinite(one).all()


def test_training_runs_the_official_gate_convolutions_and_inference_their_products():
    """Gate.branch: with gradients (training) the official 1x1 convolutions, bit for bit, so that training rounds as
    before; without (inference, replay) the same weights as matrix products, equal to within float64 rounding."""
    torch.manual_seed(0)
    gate = Gate(hidden_dim=32).double().eval()
    for bn in (gate.bn1, gate.bn2):
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 2.0)
    z = torch.rand(5, 32, dtype=torch.float64)
    official = F.relu(gate.bn2(gate.conv2(F.relu(gate.bn1(gate.conv1(z[:, :, None, None])))))).flatten(1)
    assert torch.equal(gate.branch(z), official)
    with torch.no_grad():
        products = gate.branch(z)
    torch.testing.assert_close(products, official.detach(), rtol=1e-12, atol=1e-14)
