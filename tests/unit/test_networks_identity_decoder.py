"""E_p (IdentityEncoder), G (Decoder) and dis-fc (PidWordClassifier): shapes, sizes, original key names, init."""

from __future__ import annotations

import pytest
import torch

from davs_model.networks.decoder import Decoder
from davs_model.networks.identity_encoder import NET1, NET2, PID, FaceIdClassifier, IdentityEncoder
from davs_model.networks.pid_word_classifier import PidWordClassifier

TINY = 1 / 16
BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_models(image_size: int, seed: int = 0) -> tuple[IdentityEncoder, Decoder, PidWordClassifier]:
    torch.manual_seed(seed)
    encoder = IdentityEncoder(width=TINY, image_size=image_size)
    decoder = Decoder(width=TINY, image_size=image_size, pid_dim=encoder.pid_dim, wid_dim=16)
    classifier = PidWordClassifier(width=TINY, image_size=image_size, n_words=7, n_frames=3)
    return encoder, decoder, classifier


@pytest.fixture(scope="module")
def paper() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    models = {"E_p": IdentityEncoder(), "G": Decoder(), "ID_dis32": PidWordClassifier()}
    for m in models.values():
        m.eval()
    return models


# --- the original's names (network/IdentityEncoder.py, Decoder_networks.py, Discriminator_networks.py) ---------

ENCODER_BLOCKS = ["11", "12", "13", "14", "21", "22", "23", "24", "25", "26", "31", "32", "33", "34", "41", "42"]


def original_encoder_keys() -> set[str]:
    """BasicBlock(name) registers conv{name}_a, conv{name}_b, conv{name}_a_bn, conv{name}_b_bn; the block is
    'block' + str(name), where Python 2's str(01) is '1'."""
    keys = set()
    for block, name in [("block1", "01")] + [(f"block{n}", n) for n in ENCODER_BLOCKS]:
        for conv in (f"conv{name}_a", f"conv{name}_b"):
            keys |= {f"{block}.{conv}.weight", f"{block}.{conv}.bias"}
            keys |= {f"{block}.{conv}_bn.{s}" for s in BN_SUFFIXES}
    return keys


def original_decoder_keys() -> set[str]:
    """ConvBlock(name, nums) registers conv{name}_{i} and conv{name}_{i}_bn; blocks 1–6 have 2, 3, 4, 4, 3, 2."""
    keys = {"deconv1_1_new.weight", "deconv1_1_new.bias", "conv7_1.weight", "conv7_1.bias"}
    keys |= {"conv7_2.weight", "conv7_2.bias"}
    keys |= {f"{bn}.{s}" for bn in ("deconv1_1_bn", "conv7_1_bn") for s in BN_SUFFIXES}
    for block, nums in enumerate((2, 3, 4, 4, 3, 2), start=1):
        for i in range(nums):
            keys |= {f"convblock{block}.conv{block}_{i}.{s}" for s in ("weight", "bias")}
            keys |= {f"convblock{block}.conv{block}_{i}_bn.{s}" for s in BN_SUFFIXES}
    return keys


# Hand-picked keys with their shapes at the paper's size, read off the original files.
ENCODER_SAMPLE = {
    "block1.conv01_a.weight": (32, 3, 7, 7),
    "block1.conv01_b.bias": (32,),
    "block1.conv01_a_bn.running_mean": (32,),
    "block1.conv01_b_bn.weight": (32,),
    "block11.conv11_a.weight": (32, 32, 3, 3),
    "block14.conv14_b_bn.running_var": (64,),
    "block21.conv21_a.weight": (96, 64, 3, 3),
    "block26.conv26_b.weight": (160, 160, 3, 3),
    "block31.conv31_a.weight": (320, 160, 3, 3),
    "block41.conv41_a.weight": (256, 320, 5, 5),
    "block42.conv42_b_bn.bias": (256,),
}
DECODER_SAMPLE = {
    "deconv1_1_new.weight": (512, 512, 4, 4),  # ConvTranspose2d weights are (C_in, C_out, k, k)
    "deconv1_1_bn.weight": (512,),
    "convblock1.conv1_0.weight": (512, 512, 3, 3),
    "convblock1.conv1_1_bn.running_mean": (512,),
    "convblock2.conv2_2.weight": (512, 512, 3, 3),
    "convblock3.conv3_0.weight": (256, 512, 3, 3),
    "convblock4.conv4_0.weight": (256, 416, 3, 3),  # 256 + the 160-channel skip
    "convblock4.conv4_3_bn.weight": (256,),
    "convblock5.conv5_2.bias": (128,),
    "convblock6.conv6_1.weight": (64, 64, 3, 3),
    "conv7_1.weight": (64, 32, 3, 3),
    "conv7_1_bn.running_var": (32,),
    "conv7_2.weight": (32, 3, 3, 3),
}
CLASSIFIER_KEYS = {
    "conv6.weight": (1, 64, 3, 3),
    "conv6.bias": (1,),
    "fc.weight": (128, 1024),
    "fc.bias": (128,),
    "fc_2.weight": (500, 2560),
    "fc_2.bias": (500,),
}


@pytest.mark.parametrize(
    ("name", "millions", "exact"),
    [("E_p", 15.62, 15_619_584), ("G", 22.40, 22_404_547), ("ID_dis32", 1.41, 1_412_277)],
)
def test_parameter_counts_match_the_spec(paper, name, millions, exact):
    count = n_params(paper[name])
    assert round(count / 1e6, 2) == millions
    assert count == exact


@pytest.mark.parametrize(
    ("name", "sample", "all_keys"),
    [
        ("E_p", ENCODER_SAMPLE, original_encoder_keys()),
        ("G", DECODER_SAMPLE, original_decoder_keys()),
        ("ID_dis32", CLASSIFIER_KEYS, set(CLASSIFIER_KEYS)),
    ],
)
def test_state_dict_keys_are_the_originals(paper, name, sample, all_keys):
    state = paper[name].state_dict()
    assert set(state) == all_keys
    assert {k: tuple(state[k].shape) for k in sample} == sample


def test_paper_size_forward(paper):
    with torch.no_grad():
        features = paper["E_p"](torch.rand(1, 3, 256, 256))
        assert [tuple(f.shape) for f in features] == [
            (1, 256),
            (1, 256, 8, 8),
            (1, 320, 16, 16),
            (1, 160, 32, 32),
            (1, 64, 64, 64),
        ]
        frame = paper["G"](features, torch.randn(1, 256))
        assert frame.shape == (1, 3, 256, 256)
        assert frame.min() >= 0 and frame.max() <= 1
        logits = paper["ID_dis32"](torch.randn(1, 20, 64, 64, 64))
        assert logits.shape == (1, 500)


def test_paper_size_init(paper):
    encoder, decoder, classifier = paper["E_p"], paper["G"], paper["ID_dis32"]
    assert encoder.block1.conv01_a.weight.std().item() == pytest.approx(0.025253814, rel=0.05)
    assert encoder.block31.conv31_b.weight.std().item() == pytest.approx(0.0186339, rel=0.05)
    assert torch.all(encoder.block42.conv42_a.bias == 0)
    bn = encoder.block21.conv21_b_bn
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    conv = decoder.convblock3.conv3_0  # Kaiming normal, fan_out = 256·3·3
    assert conv.weight.std().item() == pytest.approx((2 / (256 * 9)) ** 0.5, rel=0.05)
    assert torch.all(decoder.convblock3.conv3_0_bn.weight == 1)
    assert classifier.conv6.weight.std().item() == pytest.approx(0.02, rel=0.2)
    assert classifier.fc_2.weight.std().item() == pytest.approx(1e-4, rel=0.05)
    assert torch.all(classifier.fc_2.bias == 0)


@pytest.mark.parametrize("image_size", [64, 128])
def test_tiny_shapes(image_size):
    encoder, decoder, classifier = tiny_models(image_size)
    s = image_size
    features = encoder(torch.rand(2, 3, s, s))
    assert [tuple(f.shape) for f in features] == [
        (2, 16),
        (2, 16, s // 32, s // 32),
        (2, 20, s // 16, s // 16),
        (2, 8, s // 8, s // 8),
        (2, 4, s // 4, s // 4),
    ]
    frame = decoder(features, torch.randn(2, 16))
    assert frame.shape == (2, 3, s, s)
    # the same layers at every size, only the leading up-samplings go
    assert set(decoder.state_dict()) == original_decoder_keys()
    assert decoder.upsample_after == {64: (False, False, True, True, True, True), 128: (False, *[True] * 5)}[s]
    net1 = torch.stack([encoder(torch.rand(2, 3, s, s))[NET1] for _ in range(3)], dim=1)  # (B, T, C, S/4, S/4)
    assert classifier(net1).shape == (2, 7)
    assert classifier.fc.in_features == (s // 8) ** 2


def test_decoder_output_stays_in_unit_range():
    encoder, decoder, _ = tiny_models(64)
    features = encoder(torch.rand(3, 3, 64, 64))
    frame = decoder(features, 1e3 * torch.randn(3, 16))
    assert frame.min() >= 0 and frame.max() <= 1


def test_gradient_reaches_the_encoder_through_pid_and_skip():
    encoder, decoder, _ = tiny_models(64)
    features = encoder(torch.rand(2, 3, 64, 64))
    for f in features:
        f.retain_grad()
    frame = decoder(features, torch.randn(2, 16))
    (frame * torch.randn_like(frame)).sum().backward()
    assert features[PID].grad.abs().sum() > 0
    assert features[NET2].grad.abs().sum() > 0  # the skip
    for name, block in encoder.named_children():
        if name.startswith("block"):
            grads = [p.grad for p in block.parameters()]
            assert all(g is not None and torch.isfinite(g).all() for g in grads), name
            assert sum(g.abs().sum() for g in grads) > 0, name


def test_same_seed_same_init():
    first, second, other = tiny_models(64, seed=3), tiny_models(64, seed=3), tiny_models(64, seed=4)
    for a, b, c in zip(first, second, other, strict=True):
        sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_wrong_sizes_are_refused():
    encoder, decoder, classifier = tiny_models(64)
    with pytest.raises(ValueError, match="expects"):
        encoder(torch.rand(1, 3, 128, 128))
    features = encoder(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="expects"):
        decoder(features, torch.randn(1, 256))
    with pytest.raises(ValueError, match="expects"):
        classifier(torch.randn(1, 20, 4, 16, 16))
    with pytest.raises(ValueError, match="image_size"):
        IdentityEncoder(image_size=96)


def test_face_id_classifier():
    head = FaceIdClassifier(width=TINY, n_ids=11)
    assert set(head.state_dict()) == {"fc.weight", "fc.bias"}  # the original's Face_ID_fc
    assert head(torch.randn(4, 16)).shape == (4, 11)
    assert FaceIdClassifier().fc.weight.shape == (40145, 256)
