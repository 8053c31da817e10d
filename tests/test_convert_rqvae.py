"""RQ-VAE stage 1: a synthetic checkpoint in the published layout gives RQ-VAE's ids, pixels and EMA updates.

The reference recomputes RQ-VAE's published forward with torch's functional ops straight
from the source state dict: taming's CNN (attention at the lowest resolution), 1x1 quant
convs, and residual quantization over one shared codebook (nearest code by squared
distance, excluding the padding row; the decoder gets the sum of all depths' codes). Its
training step is recomputed too: the codebook's EMA is written once per depth, each depth
taking its codes from the codebook as the previous depth left it. vtok's converted model is
checked against these, not against itself. Released-size check against RQ-VAE's own code:
README.md, "Public checkpoints".
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.taming_cnn import conv, decoder, encoder, randcnn, randconv
from vtok.cli import main
from vtok.convert import convert

CH, MULT, BLOCKS, Z, K, DEPTH = 32, [1, 2], 1, 8, 24, 3  # a 2-level CNN (f2), 8-d codes, 24 of them, depth 3
CB = "quantizer.codebooks"


def rqvae_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """RQ-VAE's key layout (rqvae/models/rqvae/{rqvae,modules,layers,quantizations}.py), tiny, random values."""
    torch.manual_seed(seed)
    s: dict[str, torch.Tensor] = {}
    randcnn(s, CH, MULT, BLOCKS, Z)
    randconv(s, "quant_conv", Z, Z, 1), randconv(s, "post_quant_conv", Z, Z, 1)
    weight = torch.cat([torch.randn(K, Z) * 0.6, torch.zeros(1, Z)])  # + nn.Embedding's padding row
    shared = {"weight": weight, "cluster_size_ema": torch.rand(K) * 3, "embed_ema": weight[:-1].clone()}
    for level in range(DEPTH):  # one module, serialised once per depth
        s.update({f"{CB}.{level}.{name}": t for name, t in shared.items()})
    return s


# --- RQ-VAE's forward, recomputed ---------------------------------------------------------------


def ref_latents(s, x):
    """(B, h, w, Z): RQVAE.encode."""
    return conv(encoder(x, s, MULT, BLOCKS), s, "quant_conv").permute(0, 2, 3, 1)


def _nearest(r, codebook):
    """Squared distances to every code but the padding row; the nearest."""
    e = codebook[:-1]
    return ((r**2).sum(-1, keepdim=True) + (e**2).sum(-1) - 2 * r @ e.T).argmin(-1)


def ref_ids(s, x):
    """(B, h, w, DEPTH): each depth codes what the previous depths left, all from codebook 0."""
    r, out = ref_latents(s, x), []
    for level in range(DEPTH):
        idx = _nearest(r, s[f"{CB}.{level}.weight"])
        r = r - s[f"{CB}.{level}.weight"][idx]
        out.append(idx)
    return torch.stack(out, -1)


def ref_decode(s, ids):
    z = s[f"{CB}.0.weight"][ids].sum(-2).permute(0, 3, 1, 2)  # the sum of every depth's code
    return decoder(conv(z, s, "post_quant_conv"), s, MULT, BLOCKS)


def ref_train_step(s, z, decay=0.99, eps=1e-5):
    """One training pass of the shared codebook on latents z (N, Z), restarts off: (ids, codebook after)."""
    w, size = s[f"{CB}.0.weight"][:-1].clone(), s[f"{CB}.0.cluster_size_ema"].clone()
    total, r, ids = s[f"{CB}.0.embed_ema"].clone(), z.clone(), []
    for _ in range(DEPTH):
        e = torch.cat([w, torch.zeros(1, Z)])
        idx = _nearest(r, e)
        onehot = F.one_hot(idx, K).float()  # (N, K)
        size = decay * size + (1 - decay) * onehot.sum(0)
        total = decay * total + (1 - decay) * onehot.T @ r
        code = w[idx]  # this depth's codes come from the codebook before its own update
        n = size.sum()
        w = total / (n * (size + eps) / (n + K * eps))[:, None]
        r = r - code
        ids.append(idx)
    return torch.stack(ids, -1), w


@pytest.fixture
def rq_file(tmp_path):
    state = rqvae_state()
    torch.save({"epoch": 3, "state_dict": state, "state_dict_ema": state}, tmp_path / "model.pt")
    return state, tmp_path / "model.pt"


def test_rqvae_matches_the_published_forward(rq_file, tmp_path):
    state, path = rq_file
    model = convert("rq-vae", path, tmp_path / "out")
    assert model.quantizer.cfg.depth == DEPTH and model.quantizer.cfg.codebook_size == K
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        tokens = model.encode(x)
        want = ref_ids(state, x)  # (3, 4, 4, DEPTH)
        assert tokens.ids.shape == (3, 16, DEPTH) and tokens.grid == (4, 4)
        assert torch.equal(tokens.ids.reshape(want.shape), want)
        assert all(len(want[..., d].unique()) > 3 for d in range(DEPTH))  # not one code everywhere
        torch.testing.assert_close(model.decode(tokens), ref_decode(state, want), atol=1e-5, rtol=1e-5)


def test_rqvae_training_step_updates_the_codebook_as_published(rq_file, tmp_path):
    state, path = rq_file
    q = convert("rq-vae", path, tmp_path / "out").quantizer
    q.cfg.restart_unused_codes = False  # restarts draw random vectors; the EMA path is what is compared
    z = torch.randn(2, 40, Z)
    q.train()
    out = q(z)
    want_ids, want_codebook = ref_train_step(state, z.reshape(-1, Z))
    assert torch.equal(out.ids.reshape(-1, DEPTH), want_ids)
    torch.testing.assert_close(q.codebook.data, want_codebook, atol=1e-6, rtol=1e-5)


def test_rqvae_and_taming_files_are_told_apart(rq_file, tmp_path, capsys):
    state, path = rq_file
    assert main(["convert", "--from", "taming-vqgan", str(path), "--out", str(tmp_path / "a")]) == 2
    assert "look like rq-vae" in capsys.readouterr().err
    taming = {k: v for k, v in state.items() if not k.startswith("quantizer.")}
    taming["quantize.embedding.weight"] = torch.randn(K, Z)
    torch.save({"state_dict": taming}, tmp_path / "taming.ckpt")
    assert main(["convert", "--from", "rq-vae", str(tmp_path / "taming.ckpt"), "--out", str(tmp_path / "b")]) == 2
    assert "look like taming-vqgan" in capsys.readouterr().err
    separate = {**state, f"{CB}.1.weight": torch.randn(K + 1, Z)}
    torch.save({"state_dict": separate}, tmp_path / "sep.pt")
    assert main(["convert", "--from", "rq-vae", str(tmp_path / "sep.pt"), "--out", str(tmp_path / "c")]) == 2
    assert "separate codebook per depth" in capsys.readouterr().err
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:5000])
    assert main(["convert", "--from", "rq-vae", str(tmp_path / "cut.pt"), "--out", str(tmp_path / "d")]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    (tmp_path / "empty.pt").write_bytes(b"")
    assert main(["convert", "--from", "rq-vae", str(tmp_path / "empty.pt"), "--out", str(tmp_path / "e")]) == 2
    assert "empty" in capsys.readouterr().err


def test_rqvae_config_gives_what_the_weights_do_not(rq_file, tmp_path, capsys):
    _, path = rq_file
    (tmp_path / "config.yaml").write_text(
        "arch:\n  type: rq-vae\n  hparams: {decay: 0.95, latent_loss_weight: 0.5, restart_unused_codes: true,"
        " shared_codebook: true, latent_shape: [4, 4, 8], code_shape: [4, 4, 3]}\n"
    )
    q = convert("rq-vae", path, config=tmp_path / "config.yaml").quantizer
    assert (q.cfg.decay, q.cfg.commitment_weight, q.cfg.restart_unused_codes) == (0.95, 0.5, True)
    (tmp_path / "grouped.yaml").write_text("arch: {hparams: {latent_shape: [8, 8, 8], code_shape: [4, 4, 3]}}\n")
    args = [
        "convert",
        "--from",
        "rq-vae",
        str(path),
        "--config",
        str(tmp_path / "grouped.yaml"),
        "--out",
        str(tmp_path / "x"),
    ]
    assert main(args) == 2
    assert "groups latent positions" in capsys.readouterr().err
