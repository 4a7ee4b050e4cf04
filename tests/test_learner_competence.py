"""The competence measurement that picks SDFT or SFT per skill: a model that copies the
demonstration in its context can teach; one that ignores its context cannot. Both are tiny
scripted language models run through the real decoding loop (KV cache, shared prefix)."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.modeling_outputs import CausalLMOutputWithPast

from agent.prompt import PromptFormat
from learner.competence import choose_methods, expected_from_call, measure
from learner.config import LearnConfig
from learner.examples import examples_from_demonstrations
from learner.teacher_templates import PAPER_TEMPLATE
from skills.checker import check_calls

TOOL = {"name": "convert_units", "description": "Convert a value between units",
        "parameters": {"type": "object", "properties": {"value": {"type": "number"}, "unit": {"type": "string"}},
                       "required": ["value", "unit"]}}
UNITS = ["km", "m", "cm", "mm", "mi", "ft"]
DEMOS = [{"id": i, "skill": "units", "messages": [{"role": "user", "content": f"Convert {i} to {UNITS[i]}."}],
          "tool_calls": [{"name": "convert_units", "arguments": {"value": i, "unit": UNITS[i]}}], "content": None}
         for i in range(6)]
MARKER = PAPER_TEMPLATE.split("{demonstration}")[0].split("{question}")[1]  # "…to the question:\n"
AFTER = PAPER_TEMPLATE.split("{demonstration}")[1][:24]  # "\n\nNow answer with a resp"


class ScriptedLM(LlamaForCausalLM):
    """Its next token is a rule of the text so far; the weights are unused. The token history is
    kept in the KV cache (as the keys of its one layer), so the decoding loop's batching, row
    dropping and shared prefixes carry it along exactly as they carry real keys."""

    def __init__(self, tokenizer, rule):
        super().__init__(LlamaConfig(vocab_size=len(tokenizer), hidden_size=8, intermediate_size=8,
                                     num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1))
        self.tok, self.rule = tokenizer, rule
        self.eot = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.start = tokenizer.convert_tokens_to_ids("<|im_start|>")
        self.header = tokenizer("assistant\n", add_special_tokens=False)["input_ids"]

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=None, logits_to_keep=0, **kwargs):
        B, T = input_ids.shape
        ids = input_ids.to(torch.float64).view(B, 1, T, 1)
        keys, _ = past_key_values.update(ids, ids, 0)
        history = keys[:, 0, :, 0].long()
        real = attention_mask.bool() if attention_mask is not None else torch.ones_like(history, dtype=torch.bool)
        logits = torch.full((B, 1, self.config.vocab_size), -30.0)
        for b in range(B):
            h = history[b][real[b, -history.shape[1]:]].tolist()
            j = len(h) - 1 - h[::-1].index(self.start)
            context, answer = h[:j], h[j + 1 + len(self.header):]
            target = self.rule(self.tok.decode(context)) + [self.eot]
            ok = answer == target[:len(answer)] and len(answer) < len(target)
            logits[b, 0, target[len(answer)] if ok else self.eot] = 30.0
        return CausalLMOutputWithPast(logits=logits, past_key_values=past_key_values)


def copier(tokenizer):
    """Writes out the demonstration shown in its context (nothing when there is none)."""
    def rule(text):
        if MARKER not in text:
            return []
        shown = text.rsplit(MARKER, 1)[1].split(AFTER)[0]
        return tokenizer(shown, add_special_tokens=False)["input_ids"]
    return ScriptedLM(tokenizer, rule)


def ignorer(tokenizer):
    """Says the same thing whatever its context holds."""
    fixed = tokenizer("The answer is 42.", add_special_tokens=False)["input_ids"]
    return ScriptedLM(tokenizer, lambda text: fixed)


def _examples(tok):
    return examples_from_demonstrations(DEMOS, PromptFormat(tok), {"units": [TOOL]})


def test_expected_form_of_a_literal_call_accepts_exactly_that_call():
    call = {"name": "convert_units", "arguments": {"value": 3, "unit": "km"}}
    assert check_calls([call], [expected_from_call(call)], [TOOL]).correct
    assert not check_calls([{**call, "arguments": {"value": 4, "unit": "km"}}], [expected_from_call(call)], [TOOL]).correct


def test_a_model_that_copies_its_context_can_teach(tiny_tokenizer):
    cfg = LearnConfig(method="auto", competence_n=4)
    c = measure(copier(tiny_tokenizer), tiny_tokenizer, _examples(tiny_tokenizer), cfg, "units",
                torch.Generator().manual_seed(0))
    assert (c.n, c.teacher_correct, c.student_correct) == (4, 4, 0)
    assert c.can_teach and c.method == "sdft"
    assert "4/4" in c.why and "sdft" in c.why


def test_a_model_that_ignores_its_context_cannot(tiny_tokenizer):
    cfg = LearnConfig(method="auto", competence_n=4)
    c = measure(ignorer(tiny_tokenizer), tiny_tokenizer, _examples(tiny_tokenizer), cfg, "units",
                torch.Generator().manual_seed(0))
    assert (c.n, c.teacher_correct, c.student_correct) == (4, 0, 0)
    assert not c.can_teach and c.method == "sft"
    assert c.to_dict()["why"].startswith("sft: ") and "0/4" in c.why


def test_threshold_decides_and_the_choice_is_per_example(tiny_tokenizer):
    examples = _examples(tiny_tokenizer)
    methods, record = choose_methods(copier(tiny_tokenizer), tiny_tokenizer, examples,
                                     LearnConfig(method="auto", competence_n=3, competence_threshold=1.0))
    assert methods == ["sdft"] * len(examples) and record["units"]["teacher_rate"] == 1.0
    methods, record = choose_methods(ignorer(tiny_tokenizer), tiny_tokenizer, examples,
                                     LearnConfig(method="auto", competence_n=3, competence_threshold=0.0))
    assert methods == ["sdft"] * len(examples)  # 0% reaches a 0% threshold
    methods, record = choose_methods(ignorer(tiny_tokenizer), tiny_tokenizer, examples, LearnConfig(method="sft"))
    assert methods == ["sft"] * len(examples) and "set by the configuration" in record["units"]["why"]
