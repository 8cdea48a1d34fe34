import numpy as np
import pytest
import torch
from torch import nn

from fl_mia.config import ModelConfig
from fl_mia.models import build_model, get_weights, set_weights


@pytest.mark.parametrize("arch", ["Unet", "UnetPlusPlus", "FPN", "DeepLabV3Plus", "Linknet"])
def test_factory_builds_smp_architectures_with_the_right_output(arch):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, encoder="resnet18", encoder_depth=5), in_channels=1, classes=3)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 64))
    assert out.shape == (2, 3, 64, 64)


def test_other_encoder_and_shallow_depth():
    model = build_model(ModelConfig(encoder="mobilenet_v2", encoder_depth=3), in_channels=1, classes=1)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 1, 32, 32)


def test_groupnorm_option_removes_every_batchnorm():
    model = build_model(ModelConfig(norm="groupnorm"), in_channels=1, classes=1)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in model.modules())


def test_batchnorm_momentum_is_set():
    model = build_model(ModelConfig(norm="batchnorm", bn_momentum=0.3), in_channels=1, classes=1)
    momenta = {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert momenta == {0.3}


def test_weights_round_trip_including_buffers():
    torch.manual_seed(0)
    a = build_model(ModelConfig(), in_channels=1, classes=1)
    torch.manual_seed(1)
    b = build_model(ModelConfig(), in_channels=1, classes=1)
    weights = get_weights(a)
    weights = [w.astype(np.float64) if w.dtype == np.int64 else w for w in weights]  # as FedAvg returns them
    set_weights(b, weights)
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), key


def test_set_weights_rejects_wrong_shapes():
    model = build_model(ModelConfig(), in_channels=1, classes=1)
    weights = get_weights(model)
    with pytest.raises(ValueError, match="arrays"):
        set_weights(model, weights[:-1])
    weights[0] = np.zeros((1, 1))
    with pytest.raises(ValueError, match="shape"):
        set_weights(model, weights)


def test_local_encoder_weights_file_is_loaded(tmp_path):
    torch.manual_seed(5)
    source = build_model(ModelConfig(), in_channels=1, classes=1)
    path = tmp_path / "encoder.pt"
    torch.save(source.encoder.state_dict(), path)
    torch.manual_seed(6)
    loaded = build_model(ModelConfig(encoder_weights_path=path), in_channels=1, classes=1)
    for x, y in zip(source.encoder.state_dict().values(), loaded.encoder.state_dict().values()):
        assert torch.equal(x, y)


def test_wrong_weights_file_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"not.a.layer": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="encoder_weights_path"):
        build_model(ModelConfig(encoder_weights_path=path), in_channels=1, classes=1)


def test_a_model_checked_once_is_not_rebuilt_but_another_size_is_still_checked(monkeypatch):
    from fl_mia import models
    from fl_mia.config import DataConfig

    built = []
    real = models.build_experiment_model
    monkeypatch.setattr(models, "build_experiment_model", lambda *a, **k: built.append(1) or real(*a, **k))
    pan = ModelConfig(arch="PAN", encoder="resnet18", encoder_depth=3, norm="groupnorm")
    models.check_model_runs(pan, DataConfig(image_size=64))
    models.check_model_runs(pan, DataConfig(image_size=64))  # a suite's next cell: same model, same scans
    assert len(built) <= 1
    with pytest.raises(ValueError, match="cannot segment 32x32"):  # its pyramid needs 64
        models.check_model_runs(pan, DataConfig(image_size=32))


def test_a_hospital_model_is_an_independent_copy_of_one_build(monkeypatch):
    """model_to_load builds once per shape; each copy is the build's structure, and training one leaves the others."""
    import fl_mia.models as models

    cfg = ModelConfig(norm="groupnorm")
    builds = []
    real_build = models.build_model
    monkeypatch.setattr(models, "build_model", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    models._model_template.cache_clear()
    first = models.model_to_load(cfg, in_channels=1, classes=1, image_size=32)
    second = models.model_to_load(cfg, in_channels=1, classes=1, image_size=32)
    assert len(builds) == 1
    reference = real_build(cfg, in_channels=1, classes=1, image_size=32)
    assert [(k, v.shape) for k, v in first.state_dict().items()] == [(k, v.shape) for k, v in reference.state_dict().items()]
    before = [w.copy() for w in get_weights(second)]
    with torch.no_grad():
        for parameter in first.parameters():
            parameter.add_(1.0)
    assert all(np.array_equal(a, b) for a, b in zip(before, get_weights(second)))
    models.model_to_load(cfg, in_channels=1, classes=1, image_size=64)
    assert len(builds) == 2  # another shape is another build
