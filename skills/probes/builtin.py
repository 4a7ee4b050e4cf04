"""Probe sets written here, so the general probes work on a machine with no data at all.

INSTRUCTIONS: 20 prompts in IFEval's shape, each answerable in well under 100 tokens, with
instructions a small instruct model can follow (case, length, keywords, format, start/end).
DRIFT: 16 everyday conversations with a plain reference reply, scored teacher-forced.
"""

from __future__ import annotations


def _item(key: int, prompt: str, *instructions: tuple[str, dict]) -> dict:
    return {"key": key, "prompt": prompt, "instruction_id_list": [i for i, _ in instructions],
            "kwargs": [kw for _, kw in instructions]}


INSTRUCTIONS = [
    _item(1, "Name three fruits. Write your whole answer in lowercase letters only, no capital letters at all.",
          ("change_case:english_lowercase", {})),
    _item(2, "Describe the moon in fewer than 30 words.",
          ("length_constraints:number_words", {"relation": "less than", "num_words": 30})),
    _item(3, "Write one sentence about the ocean that includes the word \"blue\".",
          ("keywords:existence", {"keywords": ["blue"]})),
    _item(4, "Give a JSON object with the keys \"name\" and \"age\" for a made-up person. "
             "Reply with the JSON only, nothing else.",
          ("detectable_format:json_format", {})),
    _item(5, "Give one short tip for staying focused. End your reply with the exact phrase "
             "\"Is there anything else I can help with?\"",
          ("startend:end_checker", {"end_phrase": "Is there anything else I can help with?"})),
    _item(6, "What is the capital of France? Write your whole answer in capital letters only.",
          ("change_case:english_capital", {})),
    _item(7, "Explain what a cloud is in two sentences without using any commas.",
          ("punctuation:no_comma", {})),
    _item(8, "Say hello to a new colleague. Wrap your entire reply in double quotation marks.",
          ("startend:quotation", {})),
    _item(9, "List exactly 3 benefits of exercise as a markdown bullet list, each line starting with \"* \".",
          ("detectable_format:number_bullet_lists", {"num_bullets": 3})),
    _item(10, "Write a two-line poem about rain. Give it a title wrapped in double angular brackets, "
              "such as <<my title>>.",
          ("detectable_format:title", {})),
    _item(11, "Describe a cat in at least 25 words.",
          ("length_constraints:number_words", {"relation": "at least", "num_words": 25})),
    _item(12, "Describe a good breakfast without using the words \"egg\" or \"toast\".",
          ("keywords:forbidden_words", {"forbidden_words": ["egg", "toast"]})),
    _item(13, "Tell me about apples. Use the word \"apple\" at least 3 times.",
          ("keywords:frequency", {"keyword": "apple", "frequency": 3, "relation": "at least"})),
    _item(14, "Write a short note to a friend. At the end, add a postscript starting with P.S.",
          ("detectable_content:postscript", {"postscript_marker": "P.S."})),
    _item(15, "Is the sky blue on a clear day? Answer with one of the following options: "
              "\"My answer is yes.\", \"My answer is no.\", \"My answer is maybe.\"",
          ("detectable_format:constrained_response", {})),
    _item(16, "First repeat the request word for word without change, then give your answer (do not "
              "say anything before repeating the request; the request you need to repeat does not "
              "include this sentence) What is two plus two?",
          ("combination:repeat_prompt", {"prompt_to_repeat": "What is two plus two?"})),
    _item(17, "Write a short thank-you letter template with at least 2 placeholders in square "
              "brackets, such as [name].",
          ("detectable_content:number_placeholders", {"num_placeholders": 2})),
    _item(18, "Why do birds migrate? Answer in fewer than 3 sentences.",
          ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3})),
    _item(19, "Suggest two different names for a pet dog. Give two different responses, separated "
              "by 6 asterisk symbols: ******.",
          ("combination:two_responses", {})),
    _item(20, "Explain photosynthesis in a few sentences in lowercase letters only, and use the word "
              "\"light\".",
          ("change_case:english_lowercase", {}), ("keywords:existence", {"keywords": ["light"]})),
]

DRIFT = [
    {"id": "d01", "user": "What is the capital of France?", "assistant": "The capital of France is Paris."},
    {"id": "d02", "user": "How many days are in a week?", "assistant": "There are seven days in a week."},
    {"id": "d03", "user": "Give me a tip for sleeping better.",
     "assistant": "Try to go to bed at the same time every night and keep your bedroom dark and quiet."},
    {"id": "d04", "user": "What does a bee make?", "assistant": "Bees make honey and beeswax."},
    {"id": "d05", "user": "Translate 'thank you' into Spanish.", "assistant": "'Thank you' in Spanish is 'gracias'."},
    {"id": "d06", "user": "What is 12 times 3?", "assistant": "12 times 3 is 36."},
    {"id": "d07", "user": "Why is the sky blue?",
     "assistant": "Sunlight is scattered by the air, and blue light is scattered more than red light, so the sky looks blue."},
    {"id": "d08", "user": "Suggest a name for a goldfish.", "assistant": "How about Bubbles?"},
    {"id": "d09", "user": "What should I pack for a day at the beach?",
     "assistant": "Pack sunscreen, a towel, water, a hat and a snack."},
    {"id": "d10", "user": "Who wrote Romeo and Juliet?", "assistant": "Romeo and Juliet was written by William Shakespeare."},
    {"id": "d11", "user": "How do I boil an egg?",
     "assistant": "Put the egg in boiling water for about nine minutes, then cool it in cold water."},
    {"id": "d12", "user": "What is the largest planet in our solar system?",
     "assistant": "Jupiter is the largest planet in our solar system."},
    {"id": "d13", "user": "Write a short greeting for a birthday card.",
     "assistant": "Happy birthday! Wishing you a year full of joy and good friends."},
    {"id": "d14", "user": "What is the opposite of 'ancient'?", "assistant": "The opposite of 'ancient' is 'modern'."},
    {"id": "d15", "user": "Name a mammal that can fly.", "assistant": "The bat is a mammal that can fly."},
    {"id": "d16", "user": "How can I save water at home?",
     "assistant": "Turn off the tap while brushing your teeth, fix leaks and take shorter showers."},
]
