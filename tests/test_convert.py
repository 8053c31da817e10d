"""vtok convert: synthetic checkpoints in each source's published layout convert, load strictly and run."""

from __future__ import annotations

import argparse
import hashlib
import re

import pytest
import torch

import vtok
from vtok.cli import main
from vtok.convert import convert, read_checkpoint

CH, MULT, BLOCKS, Z, K, D = 32, [1, 2], 1, 32, 16, 4


def _res(prefix: str, cin: int, cout: int) -> dict[str, torch.Tensor]:
    out = {
        f"{prefix}.norm1.weight": torch.ones(cin), f"{prefix}.norm1.bias": torch.zeros(cin),
        f"{prefix}.conv1.weight": torch.randn(cout, cin, 3, 3) * 0.05, f"{prefix}.conv1.bias": torch.zeros(cout),
        f"{prefix}.norm2.weight": torch.ones(cout), f"{prefix}.norm2.bias": torch.zeros(cout),
        f"{prefix}.conv2.weight": torch.randn(cout, cout, 3, 3) * 0.05, f"{prefix}.conv2.bias": torch.zeros(cout),
    }  # fmt: skip
    if cin != cout:
        out[f"{prefix}.nin_shortcut.weight"] = torch.randn(cout, cin, 1, 1) * 0.05
        out[f"{prefix}.nin_shortcut.bias"] = torch.zeros(cout)
    return out


def _attn(prefix: str, c: int) -> dict[str, torch.Tensor]:
    out = {f"{prefix}.norm.weight": torch.ones(c), f"{prefix}.norm.bias": torch.zeros(c)}
    for name in ("q", "k", "v", "proj_out"):
        out[f"{prefix}.{name}.weight"] = torch.randn(c, c, 1, 1) * 0.05
        out[f"{prefix}.{name}.bias"] = torch.zeros(c)
    return out


def _conv(prefix: str, cin: int, cout: int, k: int = 3) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": torch.randn(cout, cin, k, k) * 0.05, f"{prefix}.bias": torch.zeros(cout)}


def _norm(prefix: str, c: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": torch.ones(c), f"{prefix}.bias": torch.zeros(c)}


def llamagen_vq_state() -> dict[str, torch.Tensor]:
    """LlamaGen VQModel keys: encoder/decoder conv_blocks (decoder block 0 = lowest resolution), mid as a list."""
    s, n = {}, len(MULT)
    s |= _conv("encoder.conv_in", 3, CH)
    cin = CH
    for i, m in enumerate(MULT):
        for j in range(BLOCKS):
            s |= _res(f"encoder.conv_blocks.{i}.res.{j}", cin, CH * m)
            cin = CH * m
            if i == n - 1:
                s |= _attn(f"encoder.conv_blocks.{i}.attn.{j}", cin)
        if i != n - 1:
            s |= _conv(f"encoder.conv_blocks.{i}.downsample.conv", cin, cin)
    s |= _res("encoder.mid.0", cin, cin) | _attn("encoder.mid.1", cin) | _res("encoder.mid.2", cin, cin)
    s |= _norm("encoder.norm_out", cin) | _conv("encoder.conv_out", cin, Z)
    s |= _conv("quant_conv", Z, D, 1) | _conv("post_quant_conv", D, Z, 1)
    s["quantize.embedding.weight"] = torch.randn(K, D)
    s["quantize.codebook_used"] = torch.zeros(65536)
    cin = CH * MULT[-1]
    s |= _conv("decoder.conv_in", Z, cin)
    s |= _res("decoder.mid.0", cin, cin) | _attn("decoder.mid.1", cin) | _res("decoder.mid.2", cin, cin)
    for k, level in enumerate(reversed(range(n))):
        for j in range(BLOCKS + 1):
            s |= _res(f"decoder.conv_blocks.{k}.res.{j}", cin, CH * MULT[level])
            cin = CH * MULT[level]
            if level == n - 1:
                s |= _attn(f"decoder.conv_blocks.{k}.attn.{j}", cin)
        if level != 0:
            s |= _conv(f"decoder.conv_blocks.{k}.upsample.conv", cin, cin)
    return s | _norm("decoder.norm_out", cin) | _conv("decoder.conv_out", cin, 3)


def taming_state() -> dict[str, torch.Tensor]:
    """taming VQModel keys: encoder.down.{i}.block/attn, mid.block_1/attn_1/block_2, decoder.up.{i} by level, loss.*."""
    renames = [("encoder.conv_blocks.", "encoder.down."), (".res.", ".block."), ("mid.0.", "mid.block_1."),
               ("mid.1.", "mid.attn_1."), ("mid.2.", "mid.block_2.")]  # fmt: skip
    out = {}
    n = len(MULT)
    for key, value in llamagen_vq_state().items():
        if key == "quantize.codebook_used":
            continue
        m = re.match(r"decoder\.conv_blocks\.(\d+)\.(.*)", key)
        if m:
            key = f"decoder.up.{n - 1 - int(m.group(1))}.{m.group(2)}"
        for a, b in renames:
            key = key.replace(a, b)
        out[key] = value
    out["loss.discriminator.main.0.weight"] = torch.zeros(4, 3, 4, 4)
    return out


def llamagen_gpt_state(dim=768, depth=1, vocab=64, classes=10) -> dict[str, torch.Tensor]:
    hidden = 2048  # find_multiple(int(2 * 4 * 768 / 3), 256)
    s = {"tok_embeddings.weight": torch.randn(vocab, dim) * 0.02, "norm.weight": torch.ones(dim)}
    s["cls_embedding.embedding_table.weight"] = torch.randn(classes + 1, dim) * 0.02
    s["output.weight"] = torch.randn(vocab, dim) * 0.02
    for i in range(depth):
        p = f"layers.{i}"
        s |= {
            f"{p}.attention.wqkv.weight": torch.randn(3 * dim, dim) * 0.02,
            f"{p}.attention.wo.weight": torch.randn(dim, dim) * 0.02,
        }
        s |= {
            f"{p}.feed_forward.w1.weight": torch.randn(hidden, dim) * 0.02,
            f"{p}.feed_forward.w3.weight": torch.randn(hidden, dim) * 0.02,
        }
        s |= {f"{p}.feed_forward.w2.weight": torch.randn(dim, hidden) * 0.02}
        s |= {f"{p}.attention_norm.weight": torch.ones(dim), f"{p}.ffn_norm.weight": torch.ones(dim)}
    return s


SOURCES = {
    "llamagen-vq": lambda: {"model": llamagen_vq_state(), "args": argparse.Namespace(image_size=256)},
    "taming-vqgan": lambda: {"state_dict": taming_state(), "global_step": 10},
    "llamagen-gpt": lambda: {"model": llamagen_gpt_state()},
}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_synthetic_checkpoints_convert_load_strictly_and_run(source, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "ckpt.pt"
    torch.save(SOURCES[source](), path)
    assert main(["convert", "--from", source, str(path), "--out", str(tmp_path / "vt")]) == 0
    model = vtok.load(tmp_path / "vt")
    assert model.source == {
        "family": source,
        "file": "ckpt.pt",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    if source == "llamagen-gpt":
        from vtok.ar_models.sample import SamplingConfig, generate

        assert model.cfg.heads == 12 and model.cfg.num_classes == 10
        tokens = generate(model, torch.tensor([1, 2]), sampling=SamplingConfig(seed=0))
        tokens.check_range()
        return
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    tokens = model.encode(x)
    assert tokens.grid == (16, 16) and model.decode(tokens).shape == x.shape
    codes = read_checkpoint(path)["quantize.embedding.weight"]
    z = model.quant_conv(model.encoder(x)).flatten(2).transpose(1, 2)  # (B, L, D)
    if source == "llamagen-vq":  # nearest l2-normalised code, as LlamaGen's quantizer picks it
        expected = (torch.nn.functional.normalize(z, dim=-1) @ torch.nn.functional.normalize(codes, dim=-1).T).argmax(
            -1
        )
    else:  # taming: plain Euclidean nearest code
        expected = torch.cdist(z, codes[None].expand(2, -1, -1)).argmin(-1)
    assert torch.equal(tokens.ids[..., 0], expected)


def test_renamed_missing_or_extra_keys_are_named(tmp_path, capsys):
    state = llamagen_vq_state()
    state["encoder.extra.weight"] = torch.zeros(1)
    torch.save({"model": state}, tmp_path / "extra.pt")
    assert main(["convert", "--from", "llamagen-vq", str(tmp_path / "extra.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "encoder.extra.weight" in capsys.readouterr().err
    state = llamagen_vq_state()
    del state["decoder.conv_out.bias"]
    torch.save({"model": state}, tmp_path / "missing.pt")
    assert main(["convert", "--from", "llamagen-vq", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "decoder.conv_out.bias" in capsys.readouterr().err


class Payload:
    def __reduce__(self):
        return (exec, ("raise SystemExit('executed')",))


class ModelCheckpoint:  # stands for Lightning's callback class, which keys a ``callbacks`` entry
    pass


@pytest.mark.parametrize("layout", ["zip", "legacy", "raw pickle"])
def test_pickled_objects_are_left_inert_and_never_executed(layout, tmp_path, capsys, caplog):
    """A Lightning-era checkpoint with a payload beside the weights: the weights convert, nothing runs."""
    import logging
    import pickle

    obj = {"state_dict": taming_state(), "callbacks": {ModelCheckpoint: {"best_model_score": 1.0}}, "hook": Payload()}
    path = tmp_path / "last.ckpt"
    if layout == "raw pickle":
        path.write_bytes(pickle.dumps(obj))
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=layout == "zip")
    with caplog.at_level(logging.INFO, logger="vtok.convert"):
        assert main(["convert", "--from", "taming-vqgan", str(path), "--out", str(tmp_path / "o")]) == 0
    assert ".exec" in caplog.text and "ModelCheckpoint" in caplog.text  # named, left inert
    assert vtok.load(tmp_path / "o").codebook_sizes == (K,)
    with pytest.raises(vtok.VtokError, match="unknown source"):
        convert("titok-x", path)


@pytest.mark.parametrize("cut", [0, 100, 0.5])
def test_truncated_checkpoints_are_named_as_such(cut, tmp_path, capsys):
    for suffix in (".pt", ".safetensors"):
        good = tmp_path / f"good{suffix}"
        if suffix == ".pt":
            torch.save({"model": llamagen_vq_state()}, good)
        else:
            from safetensors.torch import save_file

            save_file(llamagen_vq_state(), str(good))
        data = good.read_bytes()
        bad = tmp_path / f"bad{suffix}"
        bad.write_bytes(data[: int(cut * len(data)) if isinstance(cut, float) else cut])
        assert main(["convert", "--from", "llamagen-vq", str(bad), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("vtok: error:") and len(err.splitlines()) == 1
        assert ("truncated or corrupt" in err or "is empty" in err) and "unpickling" not in err


def test_another_familys_checkpoint_names_the_family_it_looks_like(tmp_path, capsys):
    torch.save({"model": llamagen_vq_state()}, tmp_path / "llamagen.pt")
    torch.save({"state_dict": taming_state()}, tmp_path / "taming.ckpt")
    assert main(["convert", "--from", "taming-vqgan", str(tmp_path / "llamagen.pt"), "--out", str(tmp_path / "o")]) == 2
    assert "look like llamagen-vq" in capsys.readouterr().err
    assert main(["convert", "--from", "llamagen-vq", str(tmp_path / "taming.ckpt"), "--out", str(tmp_path / "o")]) == 2
    assert "look like taming-vqgan" in capsys.readouterr().err


def llamagen_gpt_logits(state: dict[str, torch.Tensor], ids: torch.Tensor, labels: torch.Tensor, heads: int, grid: int):
    """LlamaGen c2i GPT's published forward, re-computed from its formulas: (B, L) ids -> (B, L, K) logits.

    One class token, then the tokens; RMSNorm (eps 1e-5), fused wqkv, a 2D rotary table (head_dim / 4
    frequencies base^(-2i / (head_dim / 2)) per axis, rows then columns) whose class row is (cos, sin) = (0, 0),
    causal attention, SwiGLU w2(silu(w1 x) * w3 x), final norm, output.
    """
    dim = state["tok_embeddings.weight"].shape[1]
    hd, half = dim // heads, dim // heads // 2
    depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("layers."))
    x = torch.cat(
        [state["cls_embedding.embedding_table.weight"][labels][:, None], state["tok_embeddings.weight"][ids[:, :-1]]], 1
    )
    freqs = 1.0 / (10000 ** (torch.arange(0, half, 2)[: half // 2].float() / half))
    f = torch.outer(torch.arange(grid).float(), freqs)  # (grid, hd / 4)
    table = torch.cat([f[:, None].expand(-1, grid, -1), f[None].expand(grid, -1, -1)], -1).reshape(grid * grid, half)
    cos = torch.cat([torch.zeros(1, half), table.cos()])[: x.shape[1]][None, :, None]  # (1, T, 1, hd / 2)
    sin = torch.cat([torch.zeros(1, half), table.sin()])[: x.shape[1]][None, :, None]

    def norm(v, w):
        return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    def rotate(v):  # (B, T, H, hd), pairs (2i, 2i + 1)
        a, b = v[..., 0::2], v[..., 1::2]
        return torch.stack([a * cos - b * sin, b * cos + a * sin], -1).flatten(3)

    b, t = x.shape[:2]
    for i in range(depth):
        p = f"layers.{i}."
        q, k, v = (norm(x, state[p + "attention_norm.weight"]) @ state[p + "attention.wqkv.weight"].T).split(dim, -1)
        q, k, v = (z.reshape(b, t, heads, hd) for z in (q, k, v))
        att = torch.nn.functional.scaled_dot_product_attention(
            rotate(q).transpose(1, 2), rotate(k).transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + att.transpose(1, 2).reshape(b, t, dim) @ state[p + "attention.wo.weight"].T
        h = norm(x, state[p + "ffn_norm.weight"])
        ffn = torch.nn.functional.silu(h @ state[p + "feed_forward.w1.weight"].T) * (
            h @ state[p + "feed_forward.w3.weight"].T
        )
        x = x + ffn @ state[p + "feed_forward.w2.weight"].T
    return norm(x, state["norm.weight"]) @ state["output.weight"].T


def test_converted_llamagen_gpt_matches_its_published_forward(tmp_path):
    """The class token's rotary rows are zeros in LlamaGen: an identity rotation there changes every logit."""
    torch.manual_seed(0)
    state = llamagen_gpt_state(depth=2, vocab=64, classes=10)
    torch.save({"model": state}, tmp_path / "gpt.pt")
    model = convert("llamagen-gpt", tmp_path / "gpt.pt").eval()
    ids, labels = torch.randint(0, 64, (2, 40)), torch.tensor([3, 7])
    with torch.no_grad():
        _, logits = model(ids[..., None], labels)
    expected = llamagen_gpt_logits(state, ids, labels, heads=12, grid=8)
    assert (logits - expected).abs().max() < 1e-4
    from vtok.ar_models.sample import SamplingConfig, generate

    cached, recomputed = (
        generate(model, labels, sampling=SamplingConfig(seed=1, top_k=8, use_cache=c)).ids for c in (True, False)
    )
    assert torch.equal(cached, recomputed)  # the KV cache path applies the same zeroed class rows


def test_a_source_declared_once_reaches_convert_the_family_check_and_the_help(tmp_path, monkeypatch, capsys):
    from vtok.convert import registry
    from vtok.convert.registry import Source
    from vtok.convert.vqgan import taming_vqgan

    registry.sources()  # the real sources first, then one more beside them
    declared = Source("extended-vqgan", "Extended VQGAN", "extra.", taming_vqgan, contains=("taming-vqgan",))
    monkeypatch.setitem(registry._SOURCES, declared.name, declared)
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    assert "extended-vqgan" in capsys.readouterr().out
    torch.save({"state_dict": {**taming_state(), "extra.flag": torch.ones(1)}}, tmp_path / "extended.ckpt")
    assert (
        main(["convert", "--from", "taming-vqgan", str(tmp_path / "extended.ckpt"), "--out", str(tmp_path / "a")]) == 2
    )
    assert "its keys look like extended-vqgan (try --from extended-vqgan)" in capsys.readouterr().err
    torch.save({"state_dict": taming_state()}, tmp_path / "taming.ckpt")
    with pytest.raises(vtok.VtokError, match="is not an extended-vqgan checkpoint: its keys look like taming-vqgan"):
        convert("extended-vqgan", tmp_path / "taming.ckpt")


def test_each_source_reads_the_entry_its_own_loader_prefers(tmp_path):
    """A training checkpoint with raw and EMA weights: a source whose evaluation reads the EMA (GigaTok,
    TokenFlow) declares it first; nested entries (UniTok's trainer.unitok) are reached by a dotted name."""
    from vtok.convert import read_checkpoint, sources

    raw, ema = {"w": torch.zeros(2)}, {"w": torch.ones(2)}
    path = tmp_path / "train.pt"
    torch.save({"model": raw, "ema": ema, "steps": 7}, path)
    assert torch.equal(read_checkpoint(path)["w"], raw["w"])  # the default order: "model" first
    for name in ("gigatok", "gigatok-2d", "tokenflow"):
        assert torch.equal(read_checkpoint(path, sources()[name].entries)["w"], ema["w"]), name
    nested = tmp_path / "unitok.pth"
    torch.save({"args": {}, "trainer": {"unitok": ema}}, nested)
    assert torch.equal(read_checkpoint(nested, sources()["unitok"].entries)["w"], ema["w"])
    with pytest.raises(vtok.VtokError, match=r"under .trainer.unitok. or at the top"):
        read_checkpoint(path, sources()["unitok"].entries)
