"""
### orchard_posttrain

A pretrained model in, a registered chat model out. Runs by itself whenever
`orchard_pretrain` publishes `pretrained_model` (or trigger it by hand with the Params),
and whenever `orchard_feedback` publishes `feedback_preferences` (users' feedback):

**From feedback** (the asset `feedback_preferences` triggered the run, or the *Feedback
dataset* Param is set), the run starts from the registry's current `champion`: its model
and its chat data (found through the version's lineage tags), and runs **dpo** only, on
the feedback pairs mixed with `feedback_ratio` of the chat data's own pairs per feedback
pair, or, with *Method from feedback* `kto` (or a set orchard_feedback gated for kto),
**kto** only (TRL `KTOTrainer`) on every labelled answer of the set, thumbs alone
included and pairs unfolded into a desirable and an undesirable answer, mixed with
`feedback_ratio` original answers (the chat data's pairs, unfolded) per feedback answer;
then **evaluate** (against the champion) and **register** as `challenger`, tagged
with the feedback dataset version, the champion it started from and the row counts
(`orchard.feedback.*`). The *Stages* Param does not apply.

From a pretrained model:

1. **chat_data** turns the curated corpus behind the pretrained model (or the `corpus`
   Param's, for an imported base model) into instruction
   conversations grounded in its own text (each documented function, class and section
   asks questions answered by its own words), plus refusals and any uploaded JSONL, and
   preference pairs with hard negatives (another entry's answer, a truncated answer, the
   base model's own sample). A held-out split of entries never reaches training, nor
   does any training row sharing a 13-gram with an evaluation task (decontamination,
   counted in the manifest). Both sets are validated with Great Expectations (Data Docs
   in the step's MLflow run).
2. **sft** (TRL `SFTTrainer`, loss on assistant tokens only) from the pretrained model:
   every weight, or LoRA adapters (PEFT, `sft_method=lora`) merged into the published
   model, the adapter kept beside it and logged to the step's MLflow run.
3. **reward** (TRL `RewardTrainer`) on the preference pairs: held-out pairwise accuracy.
4. **dpo** (TRL `DPOTrainer`) from the SFT model; `labels=judge` relabels the pairs with
   the reward model (RLAIF) instead of the grounded references.
5. **grpo** (TRL `GRPOTrainer`): online RL with the reward model plus a verifiable reward
   (the reference's key facts present in the answer).
6. **evaluate**: held-out perplexity, ROUGE-L and key facts, safety refusals, reward-model
   win rates of the candidate against the base, the earlier stages and the `champion`;
   EleutherAI's lm-evaluation-harness on local held-out tasks (`lm_eval/<task>/<metric>`).
7. **register**: a new version of `orchard-chat` (MLflow `transformers` flavor) with alias
   `challenger`, tagged with every manifest behind it and the evaluation metrics; its
   description is the model card (lm-eval scores, decontamination counts).
   `champion` is never moved, except that the first version of an empty registry becomes
   it when `champion_if_none` is on.

Every step is skipped when its output already exists, so a re-trigger does no work twice.
Runs, losses and metrics are in MLflow, one experiment per step (`orchard-sft`, …).
"""

from __future__ import annotations

from airflow.sdk import Asset, Param, dag, task

from orchard.dag_inputs import DAG_DEFAULTS, manifest_param, step_job

PRETRAINED_MODEL = Asset("pretrained_model")
FEEDBACK_DATASET = Asset("feedback_preferences")  # orchard_feedback's output
CHAT_MODEL = Asset("orchard_chat_model")
STAGES = ["sft", "reward", "dpo", "grpo"]


def _training_params(stage: str, title: str, steps: int, lr: float) -> dict[str, Param]:
    """The trigger form's steps and peak learning rate of one post-training stage, in the
    form's section of that stage."""
    return {
        f"{stage}_steps": Param(
            steps,
            type="integer",
            minimum=1,
            title=f"{title} steps",
            description=f"Optimizer steps of {title}.",
            section=title,
        ),
        f"{stage}_lr": Param(
            lr,
            type="number",
            exclusiveMinimum=0,
            title=f"{title} learning rate",
            description=f"Peak learning rate of {title} (warmup, then cosine decay).",
            section=title,
        ),
    }


@dag(
    dag_id="orchard_posttrain",
    schedule=(PRETRAINED_MODEL | FEEDBACK_DATASET),
    doc_md=__doc__,
    tags=["orchard", "model"],
    **DAG_DEFAULTS,
    # The form's first section (Airflow's "Run Parameters") holds what a run is about; each
    # stage's knobs have a section of their own, collapsed until opened.
    params={
        "pretrained": manifest_param("pretrain", "pretrained model"),
        "feedback": Param(
            None,
            type=["null", "string"],
            title="Feedback dataset manifest",
            description="A feedback step's manifest.json, or its directory: post-train the "
            "champion on it (dpo or kto only). Empty: only when feedback_preferences triggered "
            "the run.",
        ),
        "feedback_method": Param(
            "dpo",
            type="string",
            enum=["dpo", "kto"],
            title="Method from feedback",
            description="From feedback: dpo trains on the set's preference pairs, kto on every "
            "labelled answer (thumbs alone included, pairs unfolded). A run the asset "
            "feedback_preferences started uses the method the set was gated for "
            "(orchard_feedback's method Param).",
        ),
        "corpus": Param(
            None,
            type=["null", "string"],
            title="Corpus manifest",
            description="The curated corpus the chat data is built from: a curate or mix "
            "manifest.json, or its directory. Empty: the corpus the pretrained model was "
            "trained on. Give it for a model that was not pretrained here (an orchard_import "
            "output, whose manifest has no corpus behind it).",
        ),
        "stages": Param(
            STAGES,
            type="array",
            items={"type": "string", "enum": STAGES},
            title="Stages",
            description="Post-training stages to run, in pipeline order; dpo and grpo "
            "start from the latest stage before them. grpo needs reward.",
        ),
        **_training_params("sft", "SFT", steps=150, lr=5e-4),
        "sft_heldout": Param(
            256,
            type="integer",
            minimum=1,
            title="SFT held-out conversations",
            description="Held-out conversations the before/after loss is measured on (spread "
            "over the held-out split). Each is evaluated twice: fewer make SFT of a large "
            "model much shorter on CPU.",
            section="SFT",
        ),
        "sft_method": Param(
            "full",
            type="string",
            enum=["full", "lora"],
            title="SFT method",
            description="full: train every weight; lora: train low-rank adapters (PEFT) on "
            "the attention and MLP projections, merged into the published model (the "
            "adapter is also kept and logged on its own).",
            section="SFT",
        ),
        "lora_r": Param(
            16,
            type="integer",
            minimum=1,
            title="LoRA rank",
            description="Rank r of each adapter (sft_method=lora).",
            section="SFT",
        ),
        "lora_alpha": Param(
            32,
            type="number",
            exclusiveMinimum=0,
            title="LoRA alpha",
            description="Adapter updates are scaled by alpha / r (sft_method=lora).",
            section="SFT",
        ),
        "lora_dropout": Param(
            0.05,
            type="number",
            minimum=0,
            exclusiveMaximum=1,
            title="LoRA dropout",
            description="Dropout on the adapters' input (sft_method=lora).",
            section="SFT",
        ),
        **_training_params("reward", "Reward model", steps=100, lr=3e-4),
        **_training_params("dpo", "DPO", steps=60, lr=5e-5),
        "beta": Param(
            0.1,
            type="number",
            exclusiveMinimum=0,
            title="DPO and KTO beta",
            description="Strength of the KL pull towards the starting model (DPO, KTO).",
            section="DPO",
        ),
        "feedback_ratio": Param(
            1.0,
            type="number",
            minimum=0,
            title="Original data per feedback row",
            description="From feedback: the chat data's own preference pairs mixed in per "
            "feedback pair (dpo), or its pairs unfolded, original labelled answers per "
            "feedback answer (kto); 0: feedback only.",
            section="DPO",
        ),
        "labels": Param(
            "reference",
            type="string",
            enum=["reference", "judge"],
            title="Preference labels",
            description="reference: chosen = the grounded answer; judge: the reward model "
            "picks between two of the policy's own samples (RLAIF).",
            section="DPO",
        ),
        **_training_params("kto", "KTO", steps=60, lr=5e-5),
        **_training_params("grpo", "GRPO", steps=40, lr=3e-5),
        "base_samples": Param(
            64,
            type="integer",
            minimum=0,
            title="Base-model negatives",
            description="Held-in questions the pretrained model answers greedily in chat_data; "
            "its answers become rejected answers of preference pairs (0: none).",
            section="Evaluation and data",
        ),
        "compare_stages": Param(
            True,
            type="boolean",
            title="Compare with earlier stages",
            description="evaluate also answers the held-out questions with the pretrained "
            "model and each earlier stage (win rates, metrics per stage); off, only the "
            "candidate and the champion are evaluated (a large base model's time).",
            section="Evaluation and data",
        ),
        "champion_if_none": Param(
            True,
            type="boolean",
            title="First version becomes champion",
            description="On a registry with no champion yet, make this version champion "
            "too (so a fresh install serves it). Never moves an existing champion.",
        ),
        "force": Param(
            False, type="boolean", title="Rebuild", description="Redo steps already done."
        ),
    },
)
def orchard_posttrain():
    @task
    def origin(params: dict | None = None, **context) -> dict:
        """From feedback: the feedback set, and the champion's model and chat data."""
        from pathlib import Path

        from airflow.sdk.exceptions import AirflowFailException

        from orchard.errors import OrchardError
        from orchard.feedback import champion_lineage
        from orchard.settings import load_settings

        given, method = params["feedback"], params["feedback_method"]
        triggered = context.get("triggering_asset_events") or {}
        if not given and not triggered.get(PRETRAINED_MODEL):  # a new model comes first
            events = triggered.get(FEEDBACK_DATASET) or []
            extra = next((e.extra for e in reversed(list(events)) if e.extra), {})
            given, method = extra.get("manifest"), extra.get("method", method)
        if not given:
            return {"feedback": None}
        feedback = str(given).rstrip("/").removesuffix("/manifest.json")
        if "://" not in feedback and not (Path(feedback) / "manifest.json").is_file():
            raise AirflowFailException(f"no feedback manifest at {given}: run orchard_feedback")
        settings = load_settings()
        try:
            version, model, chat = champion_lineage(settings.mlflow_uri, settings.model_name)
        except OrchardError as error:
            raise AirflowFailException(str(error)) from None
        if chat is None:
            raise AirflowFailException(
                f"champion version {version} records no chat_data in its lineage: the "
                "original preference pairs to mix the feedback with are unknown"
            )
        print(f"{method} on feedback {feedback}, from champion version {version} ({model})")
        return {
            "feedback": feedback,
            "method": method,
            "champion": f"{settings.model_name}/{version}",
            "base": model.removesuffix("/manifest.json"),
            "chat": chat.removesuffix("/manifest.json"),
        }

    @task
    def pretrained(start: dict, params: dict | None = None, **context) -> str:
        from orchard.dag_inputs import upstream_manifest

        if start["feedback"]:
            return start["base"]
        found = upstream_manifest(context, PRETRAINED_MODEL, params["pretrained"], "pretrain")
        return found.removesuffix("manifest.json").rstrip("/")  # a local path or s3:// URI

    @task
    def chat_data(base: str, start: dict, params: dict | None = None, **context) -> str:
        from airflow.sdk.exceptions import AirflowFailException

        from orchard.steps import Manifest, ancestors
        from ray_jobs.chat_data import ChatDataConfig

        if start["feedback"]:
            return start["chat"]  # the champion's: its pairs are the original preference data

        corpus = (params.get("corpus") or "").rstrip("/").removesuffix("/manifest.json")
        behind = ancestors([Manifest.read(corpus or base)])
        corpora = [m.path for m in behind if m.step == "curate" and m.code_version != "unknown"]
        if not corpora:
            raise AirflowFailException(
                f"no curated corpus behind {corpus or base}: post-training builds its chat "
                "data from the corpus the model was pretrained on, or from the corpus Param "
                "(a curate or mix manifest)"
            )
        return step_job(
            context,
            params,
            "chat_data",
            "chat",
            ChatDataConfig(base_samples=params["base_samples"]),
            [*corpora, base],
        ).path

    @task
    def sft(chat: str, base: str, start: dict, params: dict | None = None, **context) -> str:
        from ray_jobs.sft import SftConfig

        if start["feedback"] or "sft" not in params["stages"]:
            return base
        lora = {}
        if params["sft_method"] == "lora":
            lora = {name: params[name] for name in ("lora_r", "lora_alpha", "lora_dropout")}
        config = SftConfig(
            steps=params["sft_steps"],
            lr=params["sft_lr"],
            method=params["sft_method"],
            heldout_examples=params["sft_heldout"],
            **lora,
        )
        return step_job(context, params, "sft", "chat", config, [chat, base]).path

    @task
    def reward(
        chat: str, policy: str, start: dict, params: dict | None = None, **context
    ) -> str | None:
        from ray_jobs.reward import RewardConfig

        if start["feedback"] or "reward" not in params["stages"]:
            return None
        config = RewardConfig(steps=params["reward_steps"], lr=params["reward_lr"])
        return step_job(context, params, "reward", "rm", config, [chat, policy]).path

    @task
    def dpo(
        chat: str, policy: str, rm: str | None, start: dict, params: dict | None = None, **context
    ):
        from airflow.sdk.exceptions import AirflowFailException

        from ray_jobs.dpo import DpoConfig

        if start["feedback"] and start["method"] != "dpo":
            return policy  # the kto task trains on this feedback
        if start["feedback"]:
            config = DpoConfig(
                steps=params["dpo_steps"],
                lr=params["dpo_lr"],
                beta=params["beta"],
                feedback_ratio=params["feedback_ratio"],
                from_champion=start["champion"],
            )
            inputs = [chat, policy, start["feedback"]]
            return step_job(context, params, "dpo", "feedback", config, inputs).path
        if "dpo" not in params["stages"]:
            return policy
        if params["labels"] == "judge" and not rm:
            raise AirflowFailException("labels=judge needs the reward stage: add it to stages")
        config = DpoConfig(
            steps=params["dpo_steps"],
            lr=params["dpo_lr"],
            beta=params["beta"],
            labels=params["labels"],
        )
        inputs = [chat, policy] + ([rm] if params["labels"] == "judge" else [])
        return step_job(context, params, "dpo", "chat", config, inputs).path

    @task
    def kto(chat: str, policy: str, start: dict, params: dict | None = None, **context):
        """From feedback with method kto: KTO from the champion on the labelled answers."""
        from ray_jobs.kto import KtoConfig

        if not start["feedback"] or start["method"] != "kto":
            return policy
        config = KtoConfig(
            steps=params["kto_steps"],
            lr=params["kto_lr"],
            beta=params["beta"],
            feedback_ratio=params["feedback_ratio"],
            from_champion=start["champion"],
        )
        inputs = [chat, policy, start["feedback"]]
        return step_job(context, params, "kto", "feedback", config, inputs).path

    @task
    def grpo(
        chat: str, policy: str, rm: str | None, start: dict, params: dict | None = None, **context
    ):
        from airflow.sdk.exceptions import AirflowFailException

        from ray_jobs.grpo import GrpoConfig

        if start["feedback"] or "grpo" not in params["stages"]:
            return policy
        if not rm:
            raise AirflowFailException("grpo needs the reward stage: add it to stages")
        config = GrpoConfig(steps=params["grpo_steps"], lr=params["grpo_lr"])
        return step_job(context, params, "grpo", "chat", config, [chat, policy, rm]).path

    @task
    def evaluate(
        chat: str,
        base: str,
        models: list[str],
        rm: str | None,
        start: dict,
        params: dict | None = None,
        **context,
    ) -> str:
        from orchard.registry import aliases, version_tag
        from orchard.settings import load_settings
        from orchard.steps import Manifest
        from ray_jobs.evaluate import EvaluateConfig

        settings = load_settings()
        # Each stage's output once, in pipeline order; the last one is the candidate.
        chain = list(dict.fromkeys([base, *models]))
        candidate, earlier = chain[-1], chain[:-1] if params["compare_stages"] else []
        if start["feedback"]:
            earlier = []  # the start is the champion, compared with as the champion
        steps = [Manifest.read(path).step for path in earlier]
        uri, name = settings.mlflow_uri, settings.model_name
        champion = aliases(uri, name).get("champion")
        made = Manifest.read(candidate)
        if champion and version_tag(uri, name, champion, f"orchard.lineage.{made.step}") == str(
            made.path
        ):
            champion = None  # a re-run whose first run made this very model champion
        config = EvaluateConfig(
            baselines=steps, model_name=settings.model_name, champion_version=champion
        )
        inputs = [chat, candidate, *earlier] + ([rm] if rm else [])
        name = candidate.rstrip("/").rsplit("/", 1)[-1]
        return step_job(context, params, "evaluate", name, config, inputs).path

    @task(outlets=[CHAT_MODEL])
    def register(
        candidate: str, evaluation: str, start: dict, params: dict | None = None, **context
    ):
        import json

        from orchard.pipeline import mlflow_ui_url
        from orchard.settings import load_settings
        from orchard.storage import join, storage_for
        from ray_jobs.register import RegisterConfig

        settings = load_settings()
        config = RegisterConfig(
            model_name=settings.model_name,
            champion_if_none=params["champion_if_none"] and not start["feedback"],
        )
        path = step_job(context, params, "register", "chat", config, [candidate, evaluation]).path
        record = json.loads(storage_for(path).read_text(join(path, "registered.json")))
        version = f"{record['model_name']}/versions/{record['version']}"
        url = f"{mlflow_ui_url(settings)}/#/models/{version}"
        print(f"registered {record['uri']} as {', '.join(record['aliases'])}: {url}")
        context["outlet_events"][CHAT_MODEL].extra = {**record, "url": url}
        return url

    start = origin()
    base = pretrained(start)
    chat = chat_data(base, start)
    tuned = sft(chat, base, start)
    rm = reward(chat, tuned, start)
    preferred = dpo(chat, tuned, rm, start)
    unpaired = kto(chat, preferred, start)
    final = grpo(chat, unpaired, rm, start)
    scores = evaluate(chat, base, [tuned, preferred, unpaired, final], rm, start)
    register(final, scores, start)


orchard_posttrain()
