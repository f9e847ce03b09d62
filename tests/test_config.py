"""The structured schema: defaults, interpolations, and rejection of bad keys and values."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from ffrun.config import validate
from ffrun.util.errors import FfrunError


def test_defaults(compose):
    cfg = compose()
    assert cfg.task.name == "image" and cfg.task.image == "astronaut" and cfg.task.resolution == 512
    assert cfg.encoding.name == "gauss" and cfg.encoding.m == 256
    assert cfg.sigma == 10.0 and cfg.encoding.sigma == 10.0
    assert cfg.device == "auto" and cfg.seed == 0
    assert (cfg.model.depth, cfg.model.width) == (4, 256)
    assert (cfg.trainer.steps, cfg.trainer.lr, cfg.trainer.batch_size) == (2000, 1e-3, None)


def test_top_level_sigma_feeds_the_gaussian_encoding(compose):
    assert compose("sigma=3.5").encoding.sigma == 3.5


@pytest.mark.parametrize("override", ["trainer.stpes=10", "task.imag=x", "sigmaa=2", "model.widht=3", "encoding.M=3"])
def test_unknown_keys_are_rejected(compose, override):
    with pytest.raises(ConfigCompositionException) as e:
        compose(override)
    assert "not in" in str(e.value.__cause__) or "not in" in str(e.value)


@pytest.mark.parametrize("override", ["trainer.steps=many", "model.depth=1.5", "trainer.progress=maybe"])
def test_mistyped_values_are_rejected(compose, override):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose(override)


def test_unknown_group_option_is_rejected(compose):
    with pytest.raises(ConfigCompositionException, match="task/shapee"):
        compose("task=shapee")


def test_paper_image_learning_rates(compose):
    # the paper's protocol (docs/protocol.md): lr 1e-3, except 1e-2 for none/basic on natural images;
    # a CLI lr still wins.
    lrs = {e: compose("experiment=paper_image", f"encoding={e}").trainer.lr
           for e in ("none", "basic", "posenc", "gauss")}
    assert lrs == {"none": 1e-2, "basic": 1e-2, "posenc": 1e-3, "gauss": 1e-3}
    assert compose("experiment=paper_image", "encoding=none", "trainer.lr=0.05").trainer.lr == 0.05
    cfg = compose("experiment=paper_image")
    assert (cfg.trainer.steps, cfg.task.resolution, cfg.sigma, cfg.encoding.scale) == (2000, 512, 10.0, 6.0)
    text = compose("experiment=paper_text", "encoding=posenc")
    assert (text.task.image, text.sigma, text.encoding.scale, text.trainer.lr) == ("text", 14.0, 5.0, 1e-3)


@pytest.mark.parametrize(
    "override,key",
    [("sigma=-1", "sigma"), ("encoding.m=0", "encoding.m"), ("model.depth=0", "model.depth"),
     ("trainer.steps=0", "trainer.steps"), ("trainer.lr=0", "trainer.lr"),
     ("trainer.batch_size=0", "trainer.batch_size")],
)
def test_out_of_range_values_name_the_key(compose, override, key):
    with pytest.raises(FfrunError, match=f"{key}="):
        validate(compose(override))
