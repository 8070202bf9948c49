"""The generation engine alone (no Ray): continuous batching is exact, sampling is
reproducible, stop sequences and limits hold, and a cancelled stream frees its slot.

The model is a tiny random Llama and the tokenizer a byte-level BPE trained here
(serving.tiny); nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import copy
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from serving.async_engine import AsyncEngine
from serving.engine import (
    ContextTooLong,
    Delta,
    Engine,
    EngineError,
    Overloaded,
    SamplingParams,
)
from serving.textstream import TextStream
from serving.tiny import build_tiny_chat_model

PROMPTS = [
    "Hello there",
    "Tell me about apples and pears, please, in as much detail as you can",
    "Hi",
    "The quick brown fox jumps over the lazy dog again and again",
]


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    path = build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "model", max_context=96)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, tokenizer


def chat_ids(tokenizer, text: str) -> list[int]:
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(rendered, add_special_tokens=False)["input_ids"]


def hf_greedy(model, tokenizer, ids: list[int], max_new_tokens: int) -> str:
    out = model.generate(
        torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False, top_p=None
    )
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


class Recorder:
    """Collects each sequence's deltas, as the serving layer would."""

    def __init__(self) -> None:
        self.deltas: dict[str, list[Delta]] = {}

    def __call__(self, key: str):
        return lambda delta: self.deltas.setdefault(key, []).append(delta)

    def text(self, key: str) -> str:
        return "".join(d.text for d in self.deltas[key])

    def last(self, key: str) -> Delta:
        return self.deltas[key][-1]


def run(engine: Engine, joins: dict[int, list[tuple[str, list[int], SamplingParams]]], rec):
    """Step the engine, adding sequences at the given step numbers."""
    for step in range(10_000):
        for key, ids, params in joins.get(step, []):
            engine.add(ids, params, rec(key))
        if not engine.has_work() and step > max(joins):
            return
        engine.step()
    raise AssertionError("engine never finished")


def test_continuous_batching_matches_hf_generate_token_for_token(hf):
    model, tokenizer = hf
    ids = [chat_ids(tokenizer, p) for p in PROMPTS]
    lengths = [30, 12, 25, 18]  # rows leave at different steps: eviction and trimming
    expected = [hf_greedy(model, tokenizer, x, n) for x, n in zip(ids, lengths, strict=True)]
    engine = Engine(model, tokenizer, max_batch_size=3)  # the fourth waits for a slot
    greedy = [SamplingParams(max_tokens=n, temperature=0) for n in lengths]
    rec = Recorder()
    joins = {0: [("0", ids[0], greedy[0])], 3: [("1", ids[1], greedy[1])]}
    joins[4] = [("2", ids[2], greedy[2]), ("3", ids[3], greedy[3])]
    run(engine, joins, rec)
    for i in range(4):
        assert rec.text(str(i)) == expected[i], f"sequence {i} diverged from HF generate"
        assert rec.last(str(i)).finish_reason == "length"
        assert rec.last(str(i)).completion_tokens == lengths[i]
        assert sum(d.tokens for d in rec.deltas[str(i)]) == lengths[i]
    assert engine.running == 0 and engine._cache is None


def test_greedy_and_seeded_sampling_do_not_depend_on_the_batch(hf):
    model, tokenizer = hf
    ids = chat_ids(tokenizer, "Hello there")
    seeded = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, seed=7)

    alone = Recorder()
    run(Engine(model, tokenizer), {0: [("s", ids, seeded)]}, alone)
    crowded = Recorder()
    others = [
        (f"o{i}", chat_ids(tokenizer, p), SamplingParams(max_tokens=15, temperature=1.0))
        for i, p in enumerate(PROMPTS)
    ]
    run(Engine(model, tokenizer), {0: others[:2], 2: [("s", ids, seeded)], 3: others[2:]}, crowded)
    assert crowded.text("s") == alone.text("s")

    other_seed = Recorder()
    params = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.9, seed=8)
    run(Engine(model, tokenizer), {0: [("s", ids, params)]}, other_seed)
    assert other_seed.text("s") != alone.text("s")


def test_a_tiny_top_p_is_greedy(hf):
    model, tokenizer = hf
    ids = chat_ids(tokenizer, "Hi")
    rec = Recorder()
    joins = {
        0: [
            ("greedy", ids, SamplingParams(max_tokens=15, temperature=0)),
            ("nucleus", ids, SamplingParams(max_tokens=15, temperature=1.5, top_p=1e-6)),
        ]
    }
    run(Engine(model, tokenizer), joins, rec)
    assert rec.text("nucleus") == rec.text("greedy")


def test_stop_sequence_ends_the_text_before_it_even_across_tokens(hf):
    model, tokenizer = hf
    ids = chat_ids(tokenizer, "Tell me about apples")
    full = hf_greedy(model, tokenizer, ids, 40)
    # A printable stretch from the middle of the answer, likely spanning token boundaries.
    start = next(i for i in range(8, len(full) - 3) if full[i : i + 3].isprintable())
    stop = full[start : start + 3]
    expected = full[: full.index(stop)]
    rec = Recorder()
    params = SamplingParams(max_tokens=40, temperature=0, stop=("never-seen", stop))
    run(Engine(model, tokenizer), {0: [("s", ids, params)]}, rec)
    assert rec.text("s") == expected
    assert rec.last("s").finish_reason == "stop"
    assert stop not in rec.text("s")


def test_end_of_turn_token_finishes_with_stop(hf):
    model, tokenizer = hf
    eager = copy.deepcopy(model)
    eos, ids = tokenizer.eos_token_id, chat_ids(tokenizer, "Hi")
    with torch.no_grad():  # make end-of-turn the model's first choice: twice the favourite
        favourite = eager(torch.tensor([ids])).logits[0, -1].argmax()
        eager.lm_head.weight[eos] = eager.lm_head.weight[favourite] * 2
    rec = Recorder()
    run(Engine(eager, tokenizer), {0: [("s", ids, SamplingParams(temperature=0))]}, rec)
    assert rec.last("s").finish_reason == "stop"
    assert rec.last("s").completion_tokens == 1
    assert rec.text("s") == ""


def test_context_limit_is_enforced_with_a_clear_error(hf):
    model, tokenizer = hf
    engine = Engine(model, tokenizer)
    limit = engine.max_context
    assert limit == 96
    with pytest.raises(ContextTooLong, match=f"maximum context length is {limit} tokens"):
        engine.add([5] * limit, SamplingParams(), lambda d: None)
    with pytest.raises(ContextTooLong, match="lower max_tokens"):
        engine.add([5] * 50, SamplingParams(max_tokens=47), lambda d: None)
    with pytest.raises(EngineError, match="empty"):
        engine.add([], SamplingParams(), lambda d: None)
    # Without max_tokens a sequence may use the rest of the context, and stops there.
    rec = Recorder()
    run(engine, {0: [("s", [5] * 80, SamplingParams(temperature=0))]}, rec)
    assert rec.last("s").finish_reason == "length"
    assert rec.last("s").completion_tokens == limit - 80


def test_a_full_queue_refuses_more(hf):
    model, tokenizer = hf
    engine = Engine(model, tokenizer, max_batch_size=1, max_waiting=1)
    greedy = SamplingParams(max_tokens=50, temperature=0)
    engine.add([5, 6], greedy, lambda d: None)
    engine.step()  # one runs, one may wait
    assert engine.running == 1
    engine.add([5, 6], greedy, lambda d: None)
    with pytest.raises(Overloaded, match="retry later"):
        engine.add([5, 6], greedy, lambda d: None)


def test_observer_sees_batching_latencies_and_tokens(hf):
    model, tokenizer = hf

    class Seen:
        def __init__(self):
            self.batch, self.queue, self.ttft, self.itl, self.count = [], [], [], [], 0
            self.reasons = []

        def queue_depth(self, n):
            self.queue.append(n)

        def batch_size(self, n):
            self.batch.append(n)

        def first_token(self, s):
            self.ttft.append(s)

        def inter_token(self, s):
            self.itl.append(s)

        def tokens(self, n):
            self.count += n

        def finished(self, reason):
            self.reasons.append(reason)

    seen = Seen()
    engine = Engine(model, tokenizer, max_batch_size=2, observer=seen)
    greedy = SamplingParams(max_tokens=5, temperature=0)
    run(engine, {0: [(str(i), [5, 6, 7], greedy) for i in range(3)]}, Recorder())
    assert max(seen.batch) == 2 and max(seen.queue) == 3
    assert len(seen.ttft) == 3 and len(seen.itl) == 3 * 4 and seen.count == 15
    assert seen.reasons == ["length"] * 3


def test_cancelling_a_stream_frees_its_slot(hf):
    model, tokenizer = hf
    engine = Engine(model, tokenizer)
    runner = AsyncEngine(engine)

    async def scenario() -> tuple[int, str | None]:
        stream = runner.submit(chat_ids(tokenizer, "Hi"), SamplingParams(temperature=0))
        first = await anext(stream)
        stream.cancel()  # what the replica does when the client disconnects
        # A second stream, consumed with `async for` and abandoned with break.
        gen = runner.generate(chat_ids(tokenizer, "Hello"), SamplingParams(temperature=0))
        async for _ in gen:
            break
        await gen.aclose()
        return first.tokens, first.finish_reason

    tokens, reason = asyncio.run(scenario())
    assert tokens >= 1 and reason is None
    deadline = time.monotonic() + 30
    while engine.has_work() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not engine.has_work() and engine.running == 0 and engine._cache is None
    while runner._thread is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert runner._thread is None  # an idle engine holds no thread


def test_async_engine_streams_the_same_text_as_the_sync_engine(hf):
    model, tokenizer = hf
    ids = chat_ids(tokenizer, "Tell me about plums")
    expected = hf_greedy(model, tokenizer, ids, 30)
    runner = AsyncEngine(Engine(model, tokenizer))

    async def collect() -> list[Delta]:
        params = SamplingParams(max_tokens=30, temperature=0)
        results = await asyncio.gather(*[_consume(runner.generate(ids, params)) for _ in range(4)])
        return results

    for deltas in asyncio.run(collect()):
        assert "".join(d.text for d in deltas) == expected
        assert deltas[-1].finish_reason == "length" and deltas[-1].completion_tokens == 30


async def _consume(stream) -> list[Delta]:
    return [delta async for delta in stream]


def test_text_stream_never_splits_a_character_and_holds_back_stop_prefixes(hf):
    _, tokenizer = hf
    text = "héllo ☃ wörld, snow ☃☃ end"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    stream = TextStream(tokenizer)
    pieces = [stream.push(i) for i in ids] + [stream.finish()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)

    stream = TextStream(tokenizer, stop=("snow ☃",))
    released = ""
    for i in ids:
        released += stream.push(i)
        assert not released.endswith("snow")  # a possible stop start is held back
        if stream.stopped:
            break
    assert stream.stopped and released + stream.finish() == "héllo ☃ wörld, "
