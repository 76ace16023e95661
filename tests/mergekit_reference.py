"""Running a recipe through evomerge and through mergekit 0.1.5 (the reference for recipe semantics), and
comparing the outputs. DARE and DELLA masks are handed from our run to mergekit's, recognised by the content of
each task vector (both sides compute it bit-identically as model - base in fp32)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import yaml

from conftest import load_state
from evomerge.merging.merge import run_merge
from evomerge.merging.recipe import recipe_from_dict


def _key(t: torch.Tensor) -> str:
    return hashlib.sha1(t.detach().contiguous().float().numpy().tobytes()).hexdigest()


def run_ours(recipe_text: str, out: Path, monkeypatch=None, seed: int = 7) -> dict[str, torch.Tensor]:
    """Run evomerge; returns the merged state and records DARE masks (delta content -> mask) on the side, from a
    run of the reference path (the CPU kernels draw the same masks, inside their loop)."""
    masks: dict[str, torch.Tensor] = {}
    if monkeypatch is not None:
        import evomerge.merging.methods.task_arithmetic as ta
        from evomerge.merging.methods.sparsify import della_probabilities

        real_dare, real_della = ta.dare, ta.della

        def recording_dare(delta, density, keep, rescale=True):
            masks[_key(delta)] = keep.clone()
            return real_dare(delta, density, keep, rescale)

        def recording_della(delta, density, epsilon, u, rescale=True):
            if u is not None:
                masks[_key(delta)] = u < della_probabilities(delta, density, epsilon)
            return real_della(delta, density, epsilon, u, rescale)

        monkeypatch.setattr(ta, "dare", recording_dare)
        monkeypatch.setattr(ta, "della", recording_della)
    recipe = recipe_from_dict(yaml.safe_load(recipe_text))
    if monkeypatch is not None:  # the masks come from the reference path; the output below from the CPU kernels
        import evomerge.merging.fused_cpu as fused_cpu

        with monkeypatch.context() as m:
            m.setattr(fused_cpu, "supports", lambda *a: False)
            run_merge(recipe, out.with_name(out.name + "-reference"), device="cpu", seed=seed, progress=False)
    run_merge(recipe, out, device="cpu", seed=seed, progress=False)
    run_ours.masks = masks
    return load_state(out)


def run_mergekit(recipe_text: str, out: Path, monkeypatch=None, masks=None) -> dict[str, torch.Tensor]:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge as mk_run
    from mergekit.options import MergeOptions

    if masks is not None:
        import mergekit.merge_methods.generalized_task_arithmetic as gta
        from mergekit.sparsify import SparsificationMethod, rescaled_masked_tensor

        real = gta.sparsify

        random = (SparsificationMethod.random, SparsificationMethod.della_magprune)

        def with_our_masks(tensor, density, method, gamma=0, epsilon=0, rescale_norm=None):
            if method not in random or density >= 1 or density <= 0:
                return real(tensor, density=density, method=method, gamma=gamma, epsilon=epsilon,
                            rescale_norm=rescale_norm)
            return rescaled_masked_tensor(tensor, masks[_key(tensor)].to(tensor.dtype), rescale_norm)

        monkeypatch.setattr(gta, "sparsify", with_our_masks)
    config = MergeConfiguration.model_validate(yaml.safe_load(recipe_text))
    mk_run(config, str(out), options=MergeOptions(device="cpu", quiet=True, random_seed=0, write_model_card=False))
    return load_state(out)


def assert_same(ours: dict, ref: dict, atol: float = 1e-5) -> None:
    assert set(ours) == set(ref), f"tensor sets differ: {set(ours) ^ set(ref)}"
    for name in ref:
        assert ours[name].shape == ref[name].shape, name
        assert ours[name].dtype == ref[name].dtype, name
        diff = (ours[name].float() - ref[name].float()).abs().max().item()
        assert diff <= atol, f"{name}: max abs diff {diff}"
