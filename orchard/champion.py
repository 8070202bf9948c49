"""The champion rule: which of a from-scratch and an adapted chat model serves as `champion`.

`make run` registers two versions of `orchard-chat` on a fresh install: the `nano` model
pretrained here from scratch and a base model adapted to the corpus (the imported
SmolLM2). Whichever registers first becomes `champion` (`champion_if_none`), which says
nothing about quality. So once the registry holds exactly one version of each kind, and
the rule has not been applied to it before, `settle_first_run` applies the rule:

1. the higher lm-eval docs-QA score wins: `lm_eval/orchard_docs_qa/contains`, the share of
   held-out documentation questions whose reference answer appears in the greedy answer
   (both models are judged on the same held-out split of the same corpus);
2. on a tie, the lower held-out bits per byte wins (`lm_eval/orchard_heldout_ppl/
   bits_per_byte`): perplexity per byte rather than per token, because the two models
   have different tokenizers and a per-token perplexity rewards a coarser vocabulary;
3. on a tie of both, the older version keeps the title (it is the one already serving).
A version without a score loses on it. The winner gets `champion`, the other
`challenger`, so the admin A/B split compares them at once.

Later versions never pass through here: the registry then has more than two versions,
and promotion is a person's decision (the admin models page). The registered model's tag
`orchard.first_run_rule` records the decision, so a re-run of `make run` does not undo a
promotion made since.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from orchard.registry import BASE_TAG

DOCS_QA = "lm_eval/orchard_docs_qa/contains"
BITS_PER_BYTE = "lm_eval/orchard_heldout_ppl/bits_per_byte"
RULE_TAG = "orchard.first_run_rule"


@dataclass(frozen=True)
class Contender:
    """A registered version and the scores the rule reads (None: not evaluated)."""

    version: str
    docs_qa: float | None
    bits_per_byte: float | None

    @classmethod
    def of_tags(cls, version: str, tags: dict[str, str]) -> Contender:
        """From a version's `eval.<metric>` tags (what the register step writes)."""

        def score(name: str) -> float | None:
            value = tags.get(f"eval.{name}")
            try:
                number = float(value) if value is not None else None
            except ValueError:
                return None
            return number if number is not None and math.isfinite(number) else None

        return cls(version, score(DOCS_QA), score(BITS_PER_BYTE))


def rank(a: Contender, b: Contender) -> tuple[Contender, Contender, str]:
    """(champion, challenger, why) by the rule in this module's docstring."""
    low = -math.inf
    qa_a, qa_b = (low if c.docs_qa is None else c.docs_qa for c in (a, b))
    if qa_a != qa_b:
        winner, loser = (a, b) if qa_a > qa_b else (b, a)
        return (
            winner,
            loser,
            (
                f"docs QA {_show(winner.docs_qa)} vs {_show(loser.docs_qa)} "
                f"(lm-eval orchard_docs_qa contains)"
            ),
        )
    high = math.inf
    bpb_a, bpb_b = (high if c.bits_per_byte is None else c.bits_per_byte for c in (a, b))
    if bpb_a != bpb_b:
        winner, loser = (a, b) if bpb_a < bpb_b else (b, a)
        return (
            winner,
            loser,
            (
                f"docs QA tied at {_show(a.docs_qa)}; held-out bits per byte "
                f"{_show(winner.bits_per_byte)} vs {_show(loser.bits_per_byte)}"
            ),
        )
    winner, loser = sorted((a, b), key=lambda c: int(c.version))
    return winner, loser, "docs QA and held-out bits per byte tied: the older version stays"


def _show(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


def settle_first_run(tracking_uri: str, name: str) -> str | None:
    """Apply the rule when registered model `name` holds exactly one from-scratch and one
    adapted version (tagged `orchard.base.source`) and the rule has not been applied
    before: set `champion` and `challenger`, record why. Returns that sentence, or None
    when the registry is not in that state."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return None
    if RULE_TAG in (model.tags or {}):
        return None
    versions = client.search_model_versions(f"name = '{name}'")
    adapted = [v for v in versions if f"{BASE_TAG}.source" in v.tags]
    if len(versions) != 2 or len(adapted) != 1:
        return None
    champion, challenger, why = rank(*(Contender.of_tags(str(v.version), v.tags) for v in versions))
    client.set_registered_model_alias(name, "champion", champion.version)
    client.set_registered_model_alias(name, "challenger", challenger.version)
    kinds = {str(v.version): "adapted" if v in adapted else "from scratch" for v in versions}
    decision = (
        f"champion: version {champion.version} ({kinds[champion.version]}), challenger: "
        f"version {challenger.version} ({kinds[challenger.version]}); {why}"
    )
    client.set_registered_model_tag(name, RULE_TAG, decision)
    return decision
