"""A tiny Llama model and a byte-level BPE tokenizer with a chat template, built in process.

No download, a few MB, deterministic: the default test suite runs on these. Two templates:
`fallback` is ChatML with role/content only (the shape of SmolLM2's), `native` takes `tools=`
and renders calls and tool results the way Qwen2.5's template does.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

NATIVE_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] }}"
    "{%- else %}{{- 'You are a tiny test model.' }}{%- endif %}"
    "{{- '\n\n# Tools\n<tools>' }}"
    "{%- for tool in tools %}{{- '\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\n</tools><|im_end|>\n' }}"
    "{%- elif messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{%- else %}{{- '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'assistant' and not message.tool_calls) %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>' + message.role }}"
    "{%- if message.content %}{{- '\n' + message.content }}{%- endif %}"
    "{%- for tool_call in message.tool_calls %}"
    "{%- if tool_call.function is defined %}{%- set tool_call = tool_call.function %}{%- endif %}"
    "{{- '\n<tool_call>\n{\"name\": \"' }}{{- tool_call.name }}"
    "{{- '\", \"arguments\": ' }}{{- tool_call.arguments | tojson }}{{- '}\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

_CORPUS = [
    "<tool_call>\n{\"name\": \"convert_units\", \"arguments\": {\"value\": 3, \"unit\": \"km\"}}\n</tool_call>",
    "What is the capital of France? Paris is the capital of France.",
    "Convert 5 miles to kilometers. How many days between 2024-01-01 and 2024-03-01?",
    "You are a helpful assistant. You can use these tools. system user assistant tool",
    "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, \"required\": [\"city\"]}",
    "<tool_response>\n{\"result\": 42}\n</tool_response> The answer is 42.",
]


def build_tiny_tokenizer(kind: str = "fallback", vocab_size: int = 512) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    fast.chat_template = {"fallback": FALLBACK_TEMPLATE, "native": NATIVE_TEMPLATE}[kind]
    return fast


def build_tiny_model(tokenizer, seed: int = 0, layers: int = 2, hidden: int = 64) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    model.eval()
    return model


def save_tiny(folder, kind: str = "fallback", seed: int = 0):
    """Write a tiny model folder (what `models add` takes) and return (model, tokenizer)."""
    tokenizer = build_tiny_tokenizer(kind)
    model = build_tiny_model(tokenizer, seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def randomise_adapter(pm, scale: float = 0.3, seed: int = 1) -> None:
    """Give a fresh LoRA student adapter seeded random weights (both A and B), so the student
    differs from its champion (adapter off) from the first forward."""
    from learner.lora import STUDENT

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if f".{STUDENT}." in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)


class Steered(torch.nn.Module):
    """The tiny model pushed to write `text` from the first new token on (what a model that
    misbehaves in a known way looks like): `push` is added, at every position of a forward
    (prefill, scoring or one decoding step alike), to the logit of the token that continues
    `text` there, so a many-token forward sees what step-by-step decoding sees, and a small push
    sets how likely the text is. Rows must share one prompt length; `module` makes agent.decode
    use the inner model's config, device and cache argument."""

    def __init__(self, model, tokenizer, prompt_len: int, text: str, push: float = 30.0):
        super().__init__()
        self.module = model
        self.prompt_len = prompt_len
        self.target = tokenizer(text, add_special_tokens=False)["input_ids"]
        self.push = push

    def forward(self, **kw):
        out = self.module(**kw)
        nxt = kw["position_ids"][:, -out.logits.shape[1]:] + 1 - self.prompt_len  # index of the token predicted
        rows, cols = ((nxt >= 0) & (nxt < len(self.target))).nonzero(as_tuple=True)
        out.logits[rows, cols, torch.tensor(self.target)[nxt[rows, cols]]] += self.push
        return out
