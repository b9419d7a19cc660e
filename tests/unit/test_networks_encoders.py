"""Lip/audio encoders, word classifier and the discriminators (spec §3.2–3.5, §3.8): shapes at the paper's and at
tiny sizes, parameter counts, the original's state-dict names, and the few behaviours that matter (BatchNorm port,
sigmoid ranges, dropout only in train mode, the mouth window of the discriminator)."""

from __future__ import annotations

import pytest
import torch

from davs_model.networks.audio_encoder import AudioEncoder
from davs_model.networks.lip_encoder import LipEncoder
from davs_model.networks.modality_discriminator import ModalityDiscriminator
from davs_model.networks.sequence_discriminator import (
    SequenceDiscriminator,
    init_discriminator_weights,
    mouth_cells,
)
from davs_model.networks.word_classifier import WordClassifier

TINY = 1 / 16


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def paper_lip() -> LipEncoder:
    return LipEncoder()


@pytest.fixture(scope="module")
def paper_d_mul() -> SequenceDiscriminator:
    return SequenceDiscriminator(n_frames=6)


# ---- parameter counts at the paper's size (spec §3: 8.41 M, 1.60 M, 1.83 M, 66 k, 19.0 M) ----------------------
# Exact counts; they equal those of the original modules' __init__ (checked once against the original code).


def test_param_counts_match_spec(paper_lip, paper_d_mul):
    counts = {
        "FanFusion": n_params(paper_lip),
        "mfcc_encoder_two": n_params(AudioEncoder()),
        "ModelFusion": n_params(WordClassifier()),
        "discriminator_audio": n_params(ModalityDiscriminator()),
        "netD": n_params(SequenceDiscriminator(n_frames=1)),
        "netD_mul": n_params(paper_d_mul),
    }
    assert counts == {
        "FanFusion": 8_414_486,  # incl. the unused model.conv5/conv6/fc
        "mfcc_encoder_two": 1_603_136,  # incl. the unused model1.bn5
        "ModelFusion": 1_830_389,  # incl. the unused dis
        "discriminator_audio": 66_049,
        "netD": 19_001_092,  # 3 image channels, 1 MFCC window
        "netD_mul": 19_019_332,  # 18 image channels, 6 MFCC windows
    }
    assert round(counts["FanFusion"] / 1e6, 2) == 8.41
    assert round(counts["mfcc_encoder_two"] / 1e6, 2) == 1.60
    assert round(counts["ModelFusion"] / 1e6, 2) == 1.83
    assert round(counts["discriminator_audio"] / 1e3) == 66
    assert round(counts["netD"] / 1e6, 1) == round(counts["netD_mul"] / 1e6, 1) == 19.0


# ---- the original's state-dict names (read from the original network/*.py) -------------------------------------

ORIGINAL_KEYS = {
    "FanFusion": {
        "model.conv1.weight": (64, 3, 7, 7),
        "model.bn1.running_var": (64,),
        "model.conv2.downsample.0.weight": (64,),
        "model.conv2.downsample.2.weight": (128, 64, 1, 1),
        "model.conv4.bn3.running_mean": (64,),
        "model.m0.b1_4.conv1.weight": (128, 256, 3, 3),
        "model.m0.b2_plus_1.conv3.weight": (64, 64, 3, 3),
        "model.m0.b3_1.bn2.bias": (128,),
        "model.top_m_0.conv2.weight": (64, 128, 3, 3),
        "model.conv_last0.bias": (256,),
        "model.bn_end0.running_mean": (256,),
        "model.l0.weight": (68, 256, 1, 1),
        "model.conv5.bias": (256,),
        "model.conv6.weight": (1, 68, 3, 3),
        "model.fc.weight": (256, 1024),
        "bn1.weight": (68,),
        "conv6.bias": (1,),
        "fc.weight": (256, 1024),
    },
    "mfcc_encoder_two": {
        "model1.conv1.weight": (64, 1, 3, 3),
        "model1.bn1.running_mean": (64,),
        "model1.conv3.weight": (256, 128, 3, 3),
        "model1.conv4.weight": (512, 256, 2, 2),
        "model1.bn5.weight": (512,),
        "model2.conv1.weight": (64, 1, 3, 12),
        "model2.bn1.running_var": (64,),
        "model2.conv2.weight": (256, 64, 3, 1),
        "model2.bn2.bias": (256,),
        "model2.conv3.weight": (512, 256, 3, 1),
        "fc.weight": (256, 1024),
        "fc.bias": (256,),
    },
    "ModelFusion": {
        "fc_1.weight": (512, 3072),
        "fc_1.bias": (512,),
        "fc_2.weight": (500, 512),
        "fc_2.bias": (500,),
        "dis.weight": (1, 512),
        "dis.bias": (1,),
    },
    "discriminator_audio": {
        "fc1.weight": (256, 256),
        "fc1.bias": (256,),
        "fc2.weight": (1, 256),
        "fc2.bias": (1,),
    },
    "netD_mul": {
        "conv1.weight": (64, 18, 4, 4),
        "conv1.bias": (64,),
        "conv2_1.weight": (128, 64, 4, 4),
        "norm_1.running_mean": (128,),
        "conv2_2.weight": (256, 128, 4, 4),
        "norm_2.weight": (256,),
        "conv3.weight": (512, 256, 4, 4),
        "norm3.running_var": (512,),
        "conv4.bias": (1,),
        "mfcc_conv1.weight": (64, 6, 3, 3),
        "mfcc_bn4.bias": (256,),
        "conv6.weight": (512, 512, 3, 3),
        "conv8.weight": (1, 512, 1, 1),
        "bn6.weight": (512,),
        "bn7.running_mean": (512,),
        "bn8.weight": (1,),
        "bn9.bias": (512,),
        "conv9.weight": (512, 512, 7, 7),
        "fc.weight": (512, 768),
        "fc2.weight": (1, 512),
    },
}

# Keys that the original has no parameters for; a bias here would be an extra, unexpected key.
ABSENT_KEYS = {
    "FanFusion": ["model.conv2.conv1.bias", "model.m0.b1_4.downsample.0.weight", "model.avgpool.weight"],
    "mfcc_encoder_two": ["model1.conv1.bias", "model2.conv3.bias"],
    "ModelFusion": ["sig.weight"],
    "discriminator_audio": ["sig.weight"],
    "netD_mul": ["conv2_1.bias", "conv3.bias", "mfcc_conv1.bias", "conv6.bias", "conv8.bias", "sig.weight"],
}


@pytest.mark.parametrize("name", sorted(ORIGINAL_KEYS))
def test_original_state_dict_names(name, paper_lip, paper_d_mul):
    model = {
        "FanFusion": lambda: paper_lip,
        "mfcc_encoder_two": AudioEncoder,
        "ModelFusion": WordClassifier,
        "discriminator_audio": ModalityDiscriminator,
        "netD_mul": lambda: paper_d_mul,
    }[name]()
    state = model.state_dict()
    for key, shape in ORIGINAL_KEYS[name].items():
        assert key in state, f"{name}: original key {key} missing"
        assert tuple(state[key].shape) == shape, f"{name}: {key} has shape {tuple(state[key].shape)}, not {shape}"
    for key in ABSENT_KEYS[name]:
        assert key not in state, f"{name}: {key} is not in the original"


def test_hourglass_has_the_original_blocks(paper_lip):
    names = {n.split(".")[0] for n, _ in paper_lip.model.m0.named_parameters()}
    expected = {f"b{branch}_{level}" for branch in (1, 2, 3) for level in (1, 2, 3, 4)} | {"b2_plus_1"}
    assert names == expected


# ---- shapes -----------------------------------------------------------------------------------------------------


def test_lip_encoder_paper_size(paper_lip):
    paper_lip.eval()
    with torch.no_grad():
        wid = paper_lip(torch.rand(1, 2, 3, 256, 256))
        heatmaps = paper_lip.model(torch.rand(1, 3, 256, 256))
    assert wid.shape == (1, 2, 256)
    assert heatmaps.shape == (1, 68, 64, 64)


def test_discriminator_paper_size(paper_d_mul):
    patch, sync = paper_d_mul(torch.rand(2, 6, 3, 256, 256), torch.randn(2, 6, 20, 12))
    assert patch.shape == (2, 1, 30, 30)
    assert sync.shape == (2, 1)
    single = SequenceDiscriminator(n_frames=1).eval()
    with torch.no_grad():
        patch, sync = single(torch.rand(1, 1, 3, 256, 256), torch.randn(1, 1, 1, 20, 12))
    assert patch.shape == (1, 1, 30, 30) and sync.shape == (1, 1)


def test_audio_classifier_modality_paper_size():
    wid = AudioEncoder()(torch.randn(2, 12, 20, 12))
    assert wid.shape == (2, 12, 256)
    assert AudioEncoder()(torch.randn(2, 3, 1, 20, 12)).shape == (2, 3, 256)
    assert WordClassifier()(wid).shape == (2, 500)
    assert ModalityDiscriminator()(wid).shape == (2, 12, 1)


@pytest.mark.parametrize("image_size", [64, 128])
def test_tiny_shapes(image_size):
    s = image_size
    lip = LipEncoder(width=TINY, image_size=s, wid_dim=32)
    assert lip(torch.rand(2, 3, 3, s, s)).shape == (2, 3, 32)
    assert lip.model(torch.rand(2, 3, s, s)).shape == (2, 68, s // 4, s // 4)
    audio = AudioEncoder(width=TINY, wid_dim=32)
    wid = audio(torch.randn(2, 4, 20, 12))
    assert wid.shape == (2, 4, 32)
    assert WordClassifier(wid_dim=32, n_steps=4, hidden=16, n_words=7)(wid).shape == (2, 7)
    assert ModalityDiscriminator(wid_dim=32)(wid).shape == (2, 4, 1)
    for n_frames in (1, 6):
        d = SequenceDiscriminator(n_frames=n_frames, width=TINY, image_size=s)
        patch, sync = d(torch.rand(2, n_frames, 3, s, s), torch.randn(2, n_frames, 20, 12))
        assert patch.shape == (2, 1, s // 8 - 2, s // 8 - 2)
        assert sync.shape == (2, 1)


def test_wrong_shapes_are_rejected():
    with pytest.raises(ValueError, match="image_size"):
        LipEncoder(image_size=96)
    with pytest.raises(ValueError, match="frames"):
        LipEncoder(width=TINY, image_size=64)(torch.rand(2, 3, 128, 128))
    with pytest.raises(ValueError, match="MFCC"):
        AudioEncoder(width=TINY)(torch.randn(2, 3, 12, 20))
    with pytest.raises(ValueError, match="wid"):
        WordClassifier()(torch.randn(2, 11, 256))
    d = SequenceDiscriminator(n_frames=1, width=TINY, image_size=64)
    with pytest.raises(ValueError, match="differ"):
        d(torch.rand(2, 1, 3, 64, 64), torch.randn(3, 1, 20, 12))


# ---- behaviour -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
def test_audio_batchnorm2d_is_the_per_channel_batchnorm(training):
    """model2.bn1 is BatchNorm1d(64) on a 4-D tensor in the original (per-channel statistics over N, H, W in
    PyTorch 0.2); our BatchNorm2d must compute exactly that."""
    encoder = AudioEncoder(width=TINY).train(training)
    bn = encoder.model2.bn1
    with torch.no_grad():
        bn.weight.normal_(1.0, 0.3)
        bn.bias.normal_(0.0, 0.3)
        bn.running_mean.normal_(0.0, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    x = encoder.model2.conv1(torch.randn(5, 1, 20, 12) * 3)  # (5, C, 18, 1)
    if training:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    else:
        mean = bn.running_mean.view(1, -1, 1, 1)
        var = bn.running_var.view(1, -1, 1, 1)
    manual = (x - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(bn(x), manual, rtol=1e-5, atol=1e-5)
    # … which is also what BatchNorm1d computes on the same data as (N, C, L)
    bn1d = torch.nn.BatchNorm1d(bn.num_features).train(training)
    bn1d.load_state_dict(bn.state_dict())
    torch.testing.assert_close(bn1d(x.squeeze(-1)).unsqueeze(-1), manual, rtol=1e-5, atol=1e-5)


def test_sigmoid_outputs_are_probabilities_and_logits_match():
    wid = torch.randn(3, 12, 32) * 50
    d_mod = ModalityDiscriminator(wid_dim=32)
    prob = d_mod(wid)
    assert prob.min() >= 0 and prob.max() <= 1
    torch.testing.assert_close(torch.sigmoid(d_mod(wid, logits=True)), prob)

    d = SequenceDiscriminator(n_frames=6, width=TINY, image_size=64)
    frames, mfcc = torch.rand(2, 6, 3, 64, 64), torch.randn(2, 6, 20, 12) * 50
    patch, sync = d(frames, mfcc)
    for out in (patch, sync):
        assert out.min() >= 0 and out.max() <= 1
    patch_logits, sync_logits = d(frames, mfcc, logits=True)
    torch.testing.assert_close(torch.sigmoid(patch_logits), patch)
    torch.testing.assert_close(torch.sigmoid(sync_logits), sync)


def test_lip_encoder_dropout_only_in_train_mode():
    lip = LipEncoder(width=TINY, image_size=64)
    frames = torch.rand(2, 2, 3, 64, 64)
    lip.train()
    with torch.no_grad():
        assert not torch.equal(lip(frames), lip(frames))
    lip.eval()
    with torch.no_grad():
        assert torch.equal(lip(frames), lip(frames))


def test_mouth_window_of_the_discriminator():
    assert mouth_cells(256) == (19, 11, 9)  # F[:, :, 19:28, 11:20], the original's window
    assert mouth_cells(128) == (9, 5, 5)
    assert mouth_cells(64) == (4, 2, 3)
    for size in (64, 128, 256):
        top, left, side = mouth_cells(size)
        assert top + side <= size // 8 - 1 and left + side <= size // 8 - 1
        assert SequenceDiscriminator(n_frames=1, width=TINY, image_size=size).conv9.kernel_size == (side - 2,) * 2


def test_sync_score_sees_only_the_mouth_window():
    """Changing the frames outside the receptive field of the mouth cells leaves the sync score unchanged."""
    d = SequenceDiscriminator(n_frames=1, width=TINY, image_size=64).eval()
    frames, mfcc = torch.rand(1, 1, 3, 64, 64), torch.randn(1, 1, 20, 12)
    changed = frames.clone()
    # F row r sees image rows 8r−15 … 8r+30, so image rows 0..7 reach only F rows 0..2 (the window is rows 4..6).
    changed[..., :8, :] = 0
    with torch.no_grad():
        patch, sync = d(frames, mfcc)
        patch_changed, sync_changed = d(changed, mfcc)
    assert not torch.equal(patch, patch_changed)
    torch.testing.assert_close(sync, sync_changed)


def test_initialisations():
    d = SequenceDiscriminator(n_frames=6, width=0.5, image_size=64)
    assert abs(d.conv3.weight.std().item() - 0.02) < 0.002
    assert torch.count_nonzero(d.conv1.bias) == 0 and torch.count_nonzero(d.conv9.bias) == 0
    assert abs(d.norm3.weight.mean().item() - 1.0) < 0.01 and 0.01 < d.norm3.weight.std().item() < 0.03
    assert torch.count_nonzero(d.norm3.bias) == 0

    bn = torch.nn.BatchNorm2d(8)
    init_discriminator_weights(bn)
    assert not torch.equal(bn.weight, torch.ones(8)) and torch.count_nonzero(bn.bias) == 0

    classifier = WordClassifier()
    assert classifier.fc_1.weight.std().item() == pytest.approx(1e-4, rel=0.05)
    assert torch.count_nonzero(classifier.fc_1.bias) == 0


def test_encoders_backpropagate():
    lip, audio = LipEncoder(width=TINY, image_size=64, wid_dim=16), AudioEncoder(width=TINY, wid_dim=16)
    loss = lip(torch.rand(2, 2, 3, 64, 64)).square().mean() + audio(torch.randn(2, 2, 20, 12)).square().mean()
    loss.backward()
    assert lip.model.conv1.weight.grad is not None and audio.model2.conv1.weight.grad is not None
    assert lip.model.conv5.weight.grad is None  # unused layer kept only for loading
    assert loss.isfinite()
