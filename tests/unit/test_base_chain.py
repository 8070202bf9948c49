"""The base-model chain of `orchard_build` (`base` Param), step by step as its DAGs run them:
a tiny Llama checkpoint written here (a ChatML template without generation markers, like
SmolLM2's) is imported, post-trained on a small documentation corpus (chat data → SFT →
DPO → evaluate with lm-eval → register), and registered with the base's lineage; beside a
from-scratch version, the champion rule sets `champion` and `challenger` by the docs-QA
score. Against a SQLite MLflow store, no server. The rule's ordering has unit tests of
its own at the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchard.champion import RULE_TAG, Contender, rank, settle_first_run
from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepOutput, run_step
from ray_jobs import chat_data, dpo, evaluate, import_model, register, sft
from tests.chat_corpus import tiny_base, upstream
from tests.unit.test_import_model import write_tiny_llama

NAME = "orchard-base-chain-test"
# SmolLM2-135M-Instruct's own template: ChatML, a default system turn, no markers.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by "
    "Hugging Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SHORT = {"batch_size": 2, "max_length": 256, "logging_steps": 1}


class Fixture(StepConfig):
    label: str


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """(settings, tracking URI, source dir, the adapted version's register manifest,
    the from-scratch version's register manifest)."""
    root = tmp_path_factory.mktemp("base-chain")
    source = write_tiny_llama(root / "tiny-smol", SMOLLM2_TEMPLATE)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # a SQLite tracking store puts artifacts in ./mlruns
        settings = Settings(
            home=root / "home", data_root=str(root / "data"), mlflow_tracking_uri=uri
        )
        data = Path(settings.data_dir)
        corpus = upstream(data)
        base = import_model.run(import_model.ImportConfig(source=str(source)), [], settings)
        chat = chat_data.run(
            chat_data.ChatDataConfig(base_samples=2, max_new_tokens=8), [corpus, base], settings
        )
        tuned = sft.run(sft.SftConfig(steps=2, heldout_examples=2, **SHORT), [chat, base], settings)
        preferred = dpo.run(dpo.DpoConfig(steps=2, **SHORT), [chat, tuned], settings)
        judged = evaluate.run(
            evaluate.EvaluateConfig(
                baselines=["import_model"], max_examples=4, max_new_tokens=8, batch_size=4
            ),
            [chat, preferred, base],
            settings,
        )
        adapted = register_version(data, uri, [preferred, judged])
        # The nano model from scratch, registered second: its evaluation answers every
        # docs question (a stand-in score), so the rule must move `champion` to it.
        nano = tiny_base(data)
        scores = run_step(
            step="evaluate",
            name="nano",
            config=Fixture(label="nano"),
            data_root=data,
            body=lambda ctx: StepOutput(
                metrics={
                    "lm_eval/orchard_docs_qa/contains": 1.0,
                    "lm_eval/orchard_heldout_ppl/bits_per_byte": 9.0,
                }
            ),
            inputs=[nano],
        )
        scratch = register_version(data, uri, [nano, scores])
        yield settings, uri, source, base, adapted, scratch


def register_version(data: Path, uri: str, inputs: list[Manifest]) -> Manifest:
    """The register step against the SQLite store, as orchard_posttrain configures it."""
    config = register.RegisterConfig(model_name=NAME, champion_if_none=True)
    return run_step(
        step="register",
        name="model",
        config=config,
        data_root=data,
        body=lambda ctx: register.register(config, inputs, ctx, uri),
        inputs=inputs,
    )


def registered(manifest: Manifest) -> dict:
    return json.loads((Path(manifest.path) / "registered.json").read_text())


@pytest.mark.slow  # the chain fixture: ~26 s CPU
def test_the_import_marks_the_assistant_turns_and_keeps_the_chats(chain):
    from transformers import AutoTokenizer

    _, _, source, base, _, _ = chain
    report = json.loads((Path(base.path) / "report.json").read_text())
    assert report["tokenizer"]["generation_markers"] == "added"
    theirs = AutoTokenizer.from_pretrained(source)
    ours = AutoTokenizer.from_pretrained(Path(base.path) / "hf")
    chat = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
    assert ours.apply_chat_template(chat, tokenize=False) == theirs.apply_chat_template(
        chat, tokenize=False
    )
    encoded = ours.apply_chat_template(chat, return_dict=True, return_assistant_tokens_mask=True)
    pairs = zip(encoded["input_ids"], encoded["assistant_masks"], strict=True)
    trained = [token for token, mask in pairs if mask]
    assert ours.decode(trained) == "Hello.<|im_end|>"


@pytest.mark.slow  # the chain fixture: ~26 s CPU
def test_the_adapted_version_names_its_base_data_tokenizer_and_runs(chain):
    _, _, source, base, adapted, _ = chain
    record = registered(adapted)
    tags = record["tags"]
    assert tags["orchard.base.source"] == str(source)
    assert tags["orchard.base.licence"] == "Apache-2.0"
    assert tags["orchard.base.sha256"] == base.facts["sha256"] and len(base.facts["sha256"]) == 64
    assert tags["orchard.base.tokenizer"] == f"{base.path}/tokenizer"
    for step in ("import_model", "curate", "crawl", "chat_data", "sft", "dpo", "evaluate"):
        assert tags[f"orchard.lineage.{step}"], step
    assert "orchard.lineage.pretrain" not in tags
    assert "eval.lm_eval/orchard_docs_qa/contains" in tags
    assert "Adapted from the base model tiny-smol" in record["description"]
    assert "sha256 " + base.facts["sha256"] in record["description"]


@pytest.mark.slow  # the chain fixture: ~26 s CPU
def test_the_from_scratch_version_has_no_base(chain):
    *_, scratch = chain
    assert not [tag for tag in registered(scratch)["tags"] if tag.startswith("orchard.base.")]


@pytest.mark.slow  # the chain fixture: ~26 s CPU
def test_the_champion_rule_sets_the_aliases_once(chain):
    from mlflow import MlflowClient

    from orchard.registry import aliases

    _, uri, _, _, adapted, scratch = chain
    first, second = registered(adapted)["version"], registered(scratch)["version"]
    assert aliases(uri, NAME) == {"champion": first, "challenger": second}  # by order only
    decision = settle_first_run(uri, NAME)
    assert aliases(uri, NAME) == {"champion": second, "challenger": first}
    assert decision.startswith(f"champion: version {second} (from scratch), challenger: ")
    assert "docs QA 1 vs" in decision
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.get_registered_model(NAME).tags[RULE_TAG] == decision
    # A person promotes the adapted version; the rule, run again, leaves that alone.
    client.set_registered_model_alias(NAME, "champion", first)
    assert settle_first_run(uri, NAME) is None
    assert aliases(uri, NAME)["champion"] == first


# -- the rule itself ----------------------------------------------------------------------


def test_the_higher_docs_qa_score_wins_whatever_the_perplexity():
    nano = Contender("1", docs_qa=0.02, bits_per_byte=0.9)
    smol = Contender("2", docs_qa=0.10, bits_per_byte=2.5)
    assert rank(nano, smol)[:2] == (smol, nano)
    assert rank(smol, nano)[:2] == (smol, nano)


def test_a_docs_qa_tie_goes_to_the_lower_bits_per_byte():
    nano = Contender("1", docs_qa=0.0, bits_per_byte=2.4)
    smol = Contender("2", docs_qa=0.0, bits_per_byte=1.1)
    champion, challenger, why = rank(nano, smol)
    assert (champion, challenger) == (smol, nano)
    assert "bits per byte 1.1 vs 2.4" in why


def test_a_missing_score_loses_and_a_full_tie_keeps_the_older_version():
    scored = Contender("3", docs_qa=0.0, bits_per_byte=None)
    unscored = Contender("2", docs_qa=None, bits_per_byte=0.5)
    assert rank(unscored, scored)[0] == scored
    same = Contender("7", 0.25, 1.5), Contender("12", 0.25, 1.5)
    assert rank(*reversed(same))[:2] == same


def test_scores_are_read_from_the_registered_versions_eval_tags():
    tags = {
        "eval.lm_eval/orchard_docs_qa/contains": "0.125",
        "eval.lm_eval/orchard_heldout_ppl/bits_per_byte": "nan",
    }
    assert Contender.of_tags("4", tags) == Contender("4", 0.125, None)
