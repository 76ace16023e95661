"""VQA evaluators on a tiny LLaVA with a real processor and fixture images; a merged VLM exports and reloads
with its processor and generates the same answers."""

from __future__ import annotations

import pytest

pytest.importorskip("fugashi")

from evomerge.evaluators.vqa import JaVgVqa, JaVgVqaOptions, JaVlmWild, VqaOptions  # noqa: E402

PROMPT = "<image> {question}"


def load(folder):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    return AutoModelForImageTextToText.from_pretrained(str(folder)).eval(), AutoProcessor.from_pretrained(str(folder))


def test_first_qa_per_image_by_default(vqa_data):
    first = JaVgVqa(JaVgVqaOptions(data=str(vqa_data / "vg.jsonl")))
    every = JaVgVqa(JaVgVqaOptions(data=str(vqa_data / "vg.jsonl"), all_qas=True))
    assert len(first.items) == 3 and len(every.items) == 6


def test_batched_generation_equals_one_by_one(tiny_llava, vqa_data):
    model, processor = load(tiny_llava)
    opts = dict(data=str(vqa_data / "wild.jsonl"), prompt=PROMPT, max_new_tokens=5, num_beams=2)
    batched = JaVlmWild(VqaOptions(**opts, batch_size=4))
    single = JaVlmWild(VqaOptions(**opts, batch_size=1))
    metrics = batched.evaluate(model, processor)
    assert set(metrics) == {"rougeL", "rougeL_ja"} and all(0 <= v <= 100 for v in metrics.values())
    assert batched.last_predictions == single.generate(model, processor)
    assert any(batched.last_predictions)  # a random model also emits special tokens, which decode to ""
    samples = batched.samples()  # each prediction with its reference and its own ROUGE-L
    assert [s["response"] for s in samples] == batched.last_predictions
    assert [s["answer"] for s in samples] == [a for _, _, a in batched.items]
    assert all(0 <= s["rougeL"] <= 1 for s in samples)


def test_merged_vlm_exports_with_processor_and_same_answers(tiny_llava, vqa_data, tmp_path):
    from evomerge.merging.merge import run_merge
    from evomerge.merging.recipe import recipe_from_dict

    recipe = recipe_from_dict({"merge_method": "passthrough",
                               "slices": [{"sources": [{"model": str(tiny_llava), "layer_range": [0, 4]}]}]})
    run_merge(recipe, tmp_path / "out", device="cpu", progress=False)
    assert (tmp_path / "out" / "processor_config.json").exists()
    ev = JaVgVqa(JaVgVqaOptions(data=str(vqa_data / "vg.jsonl"), prompt=PROMPT, max_new_tokens=5, num_beams=1))
    original = ev.generate(*load(tiny_llava))
    assert ev.generate(*load(tmp_path / "out")) == original


def test_eval_loader_returns_the_processor_for_vlms(tiny_llava):
    from evomerge.sources.loading import load_for_eval

    model, processor = load_for_eval(str(tiny_llava), "cpu")
    assert type(model).__name__ == "LlavaForConditionalGeneration" and hasattr(processor, "image_processor")


def test_hub_loader_path_with_a_local_dataset_repo(vqa_data, tmp_path):
    """`hf:REPO:SPLIT` goes through datasets.load_dataset, as for the real JA-VG-VQA-500; here REPO is a local
    folder in the hub layout (parquet, Image feature), so images arrive as PIL objects as they do from the hub."""
    import json

    import datasets

    rows = [json.loads(line) for line in (vqa_data / "vg.jsonl").read_text().splitlines()]
    features = datasets.Features({"image": datasets.Image(), "image_id": datasets.Value("int64"),
                                  "qas": [{"question": datasets.Value("string"), "answer": datasets.Value("string")}]})
    ds = datasets.Dataset.from_dict({"image": [str(vqa_data / r["image"]) for r in rows],
                                     "image_id": list(range(len(rows))), "qas": [r["qas"] for r in rows]},
                                    features=features)
    (tmp_path / "repo" / "data").mkdir(parents=True)
    ds.to_parquet(str(tmp_path / "repo" / "data" / "test-00000-of-00001.parquet"))
    hub = JaVgVqa(JaVgVqaOptions(data=f"hf:{tmp_path / 'repo'}:test"))
    local = JaVgVqa(JaVgVqaOptions(data=str(vqa_data / "vg.jsonl")))
    assert [(q, a) for _, q, a in hub.items] == [(q, a) for _, q, a in local.items]
    assert [im.tobytes() for im, _, _ in hub.items] == [im.tobytes() for im, _, _ in local.items]


def test_answers_are_items_for_racing_and_subset_fitness(vqa_data):
    """Each answer's ROUGE-L (x 100) is an item; the corpus score rebuilt from the items, scored in any order and
    any chunks, is the number `evaluate` gives (the bootstrap mid, not just the mean)."""
    ev = JaVlmWild(VqaOptions(data=str(vqa_data / "wild.jsonl"), prompt=PROMPT))
    said = ["赤いりんごです", "空が青いです", "りんごがあります", "", "青い空", "The sky is blue."]
    ev.generate = lambda model, processor, indices=None: [said[i] for i in (indices or range(len(said)))]
    metrics = ev.evaluate(None, None)
    assert ev.scores_items("rougeL") and ev.num_items() == 6 and not ev.binary_items
    values = ev.last_item_values("rougeL")
    assert 0 < metrics["rougeL"] < 100 and len(values) == 6 and values[3] == 0
    order = [4, 1, 5, 0, 3, 2]
    items = {i: v for chunk in (order[:2], order[2:]) for i, v in zip(chunk, ev.score_items(None, None, chunk))}
    assert [items[i]["rougeL"] for i in range(6)] == values
    assert ev.aggregate_items([items[i] for i in range(6)]) == metrics
