"""Architecture facts: decoder layers from tensor names and in loaded models, VLMs, hop layers, checkpoint names."""

from __future__ import annotations

import pytest
import torch

from evomerge.core.architecture import (ScaledLayer, decoder, decoder_path, detect_layout, is_vlm, layers_and_scales,
                                   num_layers)
from evomerge.core.errors import UserError


def test_layout_from_tensor_names(family):
    from evomerge.sources.models import open_model

    src = open_model(str(family["ja"]))
    layout = detect_layout(src.names(), src.config)
    assert layout.prefix == "model.layers." and layout.num_layers == 4 == num_layers(src.config)
    assert "mlp.up_proj.weight" in layout.layer_keys and layout.pre == ("model.embed_tokens.weight",)
    assert set(layout.post) == {"model.norm.weight", "lm_head.weight"}
    assert layout.layer_tensor(2, "mlp.up_proj.weight") == "model.layers.2.mlp.up_proj.weight"
    with pytest.raises(UserError, match="cannot find the 4 decoder layers"):
        detect_layout([n for n in src.names() if ".3." not in n], src.config)


def test_vlm_and_decoder_of_loaded_models(family, tiny_llava):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    assert is_vlm(AutoConfig.from_pretrained(str(tiny_llava))) and is_vlm({"text_config": {}, "vision_config": {}})
    assert not is_vlm(AutoConfig.from_pretrained(str(family["ja"])))
    lm = AutoModelForCausalLM.from_pretrained(str(family["ja"]))
    vlm = AutoModelForImageTextToText.from_pretrained(str(tiny_llava))
    assert decoder_path(lm) == ("model",) and decoder_path(vlm) == ("model", "language_model")
    assert len(decoder(vlm).layers) == 4
    with pytest.raises(UserError, match="decoder with a list of layers"):
        decoder_path(torch.nn.Linear(2, 2))


def test_hop_layers_are_unwrapped_through_the_scaled_layer_interface(family):
    from transformers import AutoModelForCausalLM

    from evomerge.merging.dataflow import DataflowPath, Hop
    from evomerge.runtime.dataflow import HopModel

    a = AutoModelForCausalLM.from_pretrained(str(family["ja"]))
    b = AutoModelForCausalLM.from_pretrained(str(family["math"]))
    path = DataflowPath(model_a="a", model_b="b", hops=[Hop(model="a", layer=0), Hop(model="b", layer=2, scale=0.5),
                                                        Hop(model="a", layer=3)])
    hop = HopModel(a, b).build(path)
    assert all(isinstance(layer, ScaledLayer) for layer in hop.model.layers)
    inner, layers = layers_and_scales(hop)
    assert [s for _, s in layers] == [1.0, 0.5, 1.0]
    assert layers[1][0] is b.model.layers[2]  # the shared layer itself, not a copy
    assert [s for _, s in layers_and_scales(a)[1]] == [1.0] * 4
