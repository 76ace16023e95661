"""Japanese VQA fitness for VLMs: JA-VG-VQA-500 and JA-VLM-Bench-In-the-Wild, scored by Japanese ROUGE-L.

Defaults follow the original evaluation: the LLaVA-Mistral chat prompt with the Japanese system message, beam
search (5 beams, repetition penalty 1.5, up to 512 new tokens), and for JA-VG-VQA only the first QA of each
image (`all_qas: true` for all of them). Data: the hub datasets, or a local JSONL whose `image` field is a path
relative to the file. The evaluator receives the model's processor in place of a tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from evomerge.core.errors import UserError
from evomerge.evaluators.base import Evaluator, Options
from evomerge.evaluators.data import digest, load_records, require_fields
from evomerge.core.resources import resolve_path

LLAVA_MISTRAL_JA = (
    "[INST] <<SYS>>\nあなたは役立つ、偏見がなく、検閲されていないアシスタントです。与えられた画像を下に、質問に答えてください。"
    "\n<</SYS>>\n\n<image>\n{question} [/INST]"
)


class VqaOptions(Options):
    data: str
    image_field: str = "image"
    question_field: str = "question"
    answer_field: str = "answer"
    qas_field: str | None = None  # records holding a list of {question, answer} per image
    all_qas: bool = False  # with qas_field: every QA instead of the first of each image
    prompt: str = LLAVA_MISTRAL_JA
    max_new_tokens: int = Field(512, ge=1)
    num_beams: int = Field(5, ge=1)
    repetition_penalty: float = Field(1.5, gt=0)
    batch_size: int = Field(8, ge=1)
    offset: int = Field(0, ge=0)
    limit: int | None = Field(None, ge=1)


class VqaEvaluator(Evaluator):
    Options = VqaOptions
    default_metric = "rougeL"
    metrics = ("rougeL", "rougeL_ja")
    item_range = (0.0, 100.0)  # one answer's ROUGE-L F-measure x 100 (racing and subset fitness)

    def __init__(self, options: VqaOptions, where: str = "vqa"):
        super().__init__(options, where)
        o = options
        records = load_records(o.data, where)
        base = resolve_path(o.data).parent if not o.data.startswith("hf:") else None
        items = []
        for rec in records:
            if o.qas_field:
                require_fields([rec], [o.qas_field, o.image_field], o.data, where)
                qas = rec[o.qas_field] if o.all_qas else rec[o.qas_field][:1]
                items += [(rec[o.image_field], qa[o.question_field], qa[o.answer_field]) for qa in qas]
            else:
                require_fields([rec], [o.image_field, o.question_field, o.answer_field], o.data, where)
                items.append((rec[o.image_field], rec[o.question_field], rec[o.answer_field]))
        end = None if o.limit is None else o.offset + o.limit
        self.items = [(self._image(img, base, where), q, a) for img, q, a in items[o.offset:end]]
        self.last_predictions: list[str] = []
        self._last_items: list[dict[str, float]] = []

    def data_fingerprint(self) -> str:
        return digest(*[p for img, q, a in self.items for p in (img.size, img.tobytes(), q, a)])

    @staticmethod
    def _image(value: Any, base: Path | None, where: str):
        from PIL import Image

        if isinstance(value, str):
            path = Path(value) if base is None or Path(value).is_absolute() else base / value
            if not path.is_file():
                raise UserError(f"image {path} not found", where)
            with Image.open(path) as im:
                return im.convert("RGB")
        return value.convert("RGB")  # a PIL image from the hub dataset

    def generate(self, model: Any, processor: Any, indices: list[int] | None = None) -> list[str]:
        """Answers to every item, or to the listed ones, in that order."""
        o = self.options
        items = self.items if indices is None else [self.items[i] for i in indices]
        tok = getattr(processor, "tokenizer", None)
        if tok is None:
            raise UserError(f"{self.name} needs a vision-language model with a processor")
        side = tok.padding_side
        tok.padding_side = "left"
        device = next(model.parameters()).device
        out: list[str] = []
        try:
            for start in range(0, len(items), o.batch_size):
                batch = items[start:start + o.batch_size]
                prompts = [o.prompt.format(question=q) for _, q, _ in batch]
                inputs = processor(images=[im for im, _, _ in batch], text=prompts, return_tensors="pt",
                                   padding=True).to(device)
                with torch.no_grad():
                    ids = model.generate(**inputs, max_new_tokens=o.max_new_tokens, num_beams=o.num_beams,
                                         repetition_penalty=o.repetition_penalty, do_sample=False,
                                         pad_token_id=tok.pad_token_id)
                new = ids[:, inputs["input_ids"].shape[1]:]
                self.tokens.add(int(inputs["attention_mask"].sum()), int((new != tok.pad_token_id).sum()))
                out += [t.strip() for t in processor.batch_decode(new, skip_special_tokens=True)]
        finally:
            tok.padding_side = side
        return out

    def evaluate(self, model: Any, processor: Any) -> dict[str, float]:
        preds = self.generate(model, processor)
        self.last_predictions = preds  # samples() pairs them with the items
        self._last_items = self._pairs(range(len(self.items)), preds)
        return self.aggregate_items(self._last_items)

    def _pairs(self, indices: Any, preds: list[str]) -> list[dict[str, float]]:
        from evomerge.evaluators.rouge_ja import rouge_l_pairs

        refs = [self.items[i][2] for i in indices]
        f, f_ja = rouge_l_pairs(refs, preds), rouge_l_pairs(refs, preds, ja_only=True)
        return [{"rougeL": a * 100, "rougeL_ja": b * 100, "f": a, "f_ja": b} for a, b in zip(f, f_ja)]

    def num_items(self) -> int:
        return len(self.items)

    def score_items(self, model: Any, processor: Any, indices: list[int]) -> list[dict[str, float]]:
        return self._pairs(indices, self.generate(model, processor, indices))

    def aggregate_items(self, items: list[dict[str, float]]) -> dict[str, float]:
        """The corpus ROUGE-L of the items (bootstrap mid, as `evaluate` computes it): the same number from the
        same answers, whichever way they were scored."""
        from evomerge.evaluators.rouge_ja import rouge_l_mid

        return {"rougeL": rouge_l_mid([v["f"] for v in items]), "rougeL_ja": rouge_l_mid([v["f_ja"] for v in items])}

    def last_item_values(self, metric: str) -> list[float] | None:
        return [v[metric] for v in self._last_items] if self._last_items and metric in self.metrics else None

    def samples(self) -> list[dict[str, Any]]:
        from evomerge.evaluators.rouge_ja import rouge_l_pairs

        refs = [a for _, _, a in self.items][: len(self.last_predictions)]
        rouge = rouge_l_pairs(refs, self.last_predictions)
        return [{"question": q, "answer": a, "response": p, "rougeL": r}
                for (_, q, a), p, r in zip(self.items, self.last_predictions, rouge)]


class JaVgVqaOptions(VqaOptions):
    data: str = "hf:SakanaAI/JA-VG-VQA-500:test"
    qas_field: str | None = "qas"


class JaVgVqa(VqaEvaluator):
    name = "ja_vg_vqa"
    Options = JaVgVqaOptions


class JaVlmWildOptions(VqaOptions):
    data: str = "hf:SakanaAI/JA-VLM-Bench-In-the-Wild:test"


class JaVlmWild(VqaEvaluator):
    name = "ja_vlm_wild"
    Options = JaVlmWildOptions
