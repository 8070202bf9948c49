"""Orchard's chat format: the special tokens, their fixed ids and the chat template that
every tokenizer Orchard trains carries (the tokenizer step's, and the tiny test models').

The special tokens come first in the vocabulary, in this order, so their ids are fixed:
`<|endoftext|>` 0 (end of document, end of a chat turn, EOS), `<|system|>` 1,
`<|user|>` 2, `<|assistant|>` 3, `<|pad|>` 4.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (EOS_TOKEN, "<|system|>", "<|user|>", "<|assistant|>", PAD_TOKEN)

# Zephyr-style turns: `<|role|>\n{content}<|endoftext|>\n`. The assistant's content and
# its closing <|endoftext|> sit inside {% generation %} so TRL's assistant_only_loss (and
# `return_assistant_tokens_mask`) train on exactly what the model must produce, stop
# token included. Each role's tag is a literal, never built from the role's string.
CHAT_TEMPLATE = r"""{%- for message in messages -%}
{%- if message['content'] is string -%}
{%- set content = message['content'] -%}
{%- else -%}
{%- set content = message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') -%}
{%- endif -%}
{%- if message['role'] == 'system' -%}
{{ '<|system|>\n' + content + '<|endoftext|>\n' }}
{%- elif message['role'] == 'user' -%}
{{ '<|user|>\n' + content + '<|endoftext|>\n' }}
{%- elif message['role'] == 'assistant' -%}
{{ '<|assistant|>\n' }}{% generation %}{{ content + '<|endoftext|>' }}{% endgeneration %}{{ '\n' }}
{%- else -%}
{{ raise_exception('chat roles are system, user and assistant, not ' + message['role']) }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
{{ '<|assistant|>\n' }}
{%- endif -%}
"""  # noqa: E501


def new_tokenizer():
    """An untrained byte-level BPE: lossless by construction (no normaliser)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    # Offsets keep their spaces: the assistant-token mask is computed from them.
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def train_bpe(texts: Iterable[list[str]], *, vocab_size: int, min_frequency: int):
    """A trained byte-level BPE with the special tokens first; `texts` yields batches."""
    from tokenizers import pre_tokenizers, trainers

    tokenizer = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def wrap(tokenizer):
    """The `transformers` tokenizer around a trained one, with the chat template."""
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        # Never rewrite spaces around punctuation when decoding: the round trip is exact.
        clean_up_tokenization_spaces=False,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


# -- generation markers for a base model's own template ----------------------------------

_GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")
_PROBES = (
    [{"role": "user", "content": "Q1"}],
    [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}],
    [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
    ],
)


def _chatml(default_system: str) -> str:
    """ChatML (`<|im_start|>role\\n...<|im_end|>\\n`) with the assistant's content and its
    `<|im_end|>` inside {% generation %}; `default_system` opens a chat that has no system
    turn (SmolLM2's template does that), as a Jinja string literal."""
    return (
        "{%- for message in messages -%}"
        "{%- if loop.first and messages[0]['role'] != 'system' -%}"
        "{{ " + json.dumps(default_system) + " }}{%- endif -%}"
        "{%- if message['role'] == 'assistant' -%}{{ '<|im_start|>assistant\\n' }}"
        "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
        "{{ '\\n' }}"
        "{%- else -%}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] "
        "+ '<|im_end|>\\n' }}{%- endif -%}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
    )


def has_generation_markers(template: str | None) -> bool:
    return bool(template and _GENERATION.search(template))


def add_generation_markers(tokenizer) -> str:
    """Make `tokenizer.chat_template` mark the assistant's tokens with {% generation %}
    (what TRL's `assistant_only_loss` and evaluation's assistant-token mask read), keeping
    every rendered chat byte-identical. Returns "present" (the template had them), "added"
    or "missing": a template without markers is replaced by ChatML with markers only when
    both render the same probe chats, since guessing where an answer starts in another
    template would train on the wrong tokens (post-training then refuses the model)."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return "missing"
    if has_generation_markers(template):
        return "present"

    def render(messages, generation_prompt: bool, with_template: str | None = None) -> str:
        return tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=generation_prompt,
            **({"chat_template": with_template} if with_template else {}),
        )

    try:
        first = render(_PROBES[0], False)
        turn = "<|im_start|>user\nQ1<|im_end|>\n"
        if not first.endswith(turn):
            return "missing"
        marked = _chatml(first.removesuffix(turn))
        same = all(
            render(messages, prompt) == render(messages, prompt, marked)
            for messages in _PROBES
            for prompt in (False, True)
        )
    except Exception:  # a template that raises on a probe (jinja errors have many types)
        return "missing"
    if not same:
        return "missing"
    tokenizer.chat_template = marked
    return "added"
