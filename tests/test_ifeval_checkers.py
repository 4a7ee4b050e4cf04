"""IFEval checkers against hand-labelled replies: for each instruction id a reply that follows it
and one that does not, chosen at the edges where IFEval's rules are easy to get wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skills.probes.instructions import CHECKERS, _sentences, check

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "retention"

# (instruction id, kwargs, reply, followed?) — labelled by reading IFEval's rule for the id.
LABELLED = [
    ("punctuation:no_comma", {}, "No commas at all; none.", True),
    ("punctuation:no_comma", {}, "Well, one.", False),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 4}, "one two three", True),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 4}, "one, two-three four", False),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 5}, "It's a fine, sunny day.", True),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 5}, "A fine day.", False),
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3},
     "Dr. Smith arrived at 5 p.m. in the U.S. capital. He sat down.", True),
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3},
     "one. two! three?", False),
    ("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 3},
     'It rained! "Then it stopped?" Yes.', True),
    ("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 3},
     "J. K. Rowling wrote it. Fans loved it.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "***\nFirst part.\n***\nSecond part.\n***", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First.\n***\n***\nSecond.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "One. *** Two. *** Three.", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "One.\n\nTwo.\n\nThree.", False),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "summer"},
     'Intro.\n\n"Summer, at last," she said.\n\nEnd.', True),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "summer"},
     "Intro.\n\nSummers are long.\n\nEnd.", False),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "summer"},
     "Intro.\n\nSummer is here.", False),  # two paragraphs, not three
    ("keywords:existence", {"keywords": ["blue", "sea"]}, "Blueberries by the seashore.", True),
    ("keywords:existence", {"keywords": ["blue", "sea"]}, "A blue sky.", False),
    ("keywords:forbidden_words", {"forbidden_words": ["egg", "run"]}, "Eggplant, running late.", True),
    ("keywords:forbidden_words", {"forbidden_words": ["egg", "run"]}, "One EGG.", False),
    ("keywords:frequency", {"keyword": "dog", "frequency": 2, "relation": "at least"}, "Dogs and a dog.", True),
    ("keywords:frequency", {"keyword": "dog", "frequency": 2, "relation": "at least"}, "A dog and a cat.", False),
    ("keywords:frequency", {"keyword": "dog", "frequency": 3, "relation": "less than"}, "dog, dog", True),
    ("keywords:frequency", {"keyword": "dog", "frequency": 3, "relation": "less than"}, "dog dog hotdog", False),
    ("keywords:letter_frequency", {"letter": "l", "let_frequency": 4, "let_relation": "at least"}, "Hello, Lola", True),
    ("keywords:letter_frequency", {"letter": "l", "let_frequency": 4, "let_relation": "at least"}, "Hello", False),
    ("keywords:letter_frequency", {"letter": "q", "let_frequency": 2, "let_relation": "less than"}, "Quiet", True),
    ("keywords:letter_frequency", {"letter": "q", "let_frequency": 2, "let_relation": "less than"}, "Quick quiz", False),
    ("change_case:english_lowercase", {}, "hello world, 2 cats.", True),
    ("change_case:english_lowercase", {}, "hello World", False),
    ("change_case:english_lowercase", {}, "привет мир", False),  # lowercase, but not English letters
    ("change_case:english_lowercase", {}, "123 456", False),
    ("change_case:english_capital", {}, "HELLO WORLD, 2 CATS!", True),
    ("change_case:english_capital", {}, "HELLO World", False),
    ("change_case:english_capital", {}, "ПРИВЕТ МИР", False),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "NASA and the ESA.", True),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "Nasa and the ESA.", False),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"},
     "Only the USA here.", True),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"},
     "I like the USA.", False),  # "I" is a capital word too
    ("change_case:capital_word_frequency", {"capital_frequency": 3, "capital_relation": "at least"},
     "The U.S.A., COVID-19 and ALL-CAPS.", True),
    ("change_case:capital_word_frequency", {"capital_frequency": 4, "capital_relation": "at least"},
     "The U.S.A., COVID-19 and ALL-CAPS.", False),  # three words, not five pieces
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Thanks. any other questions?\n", True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Any other questions? Bye.", False),
    ("startend:quotation", {}, ' "Hi there" ', True),
    ("startend:quotation", {}, '"Hi there', False),
    ("startend:quotation", {}, '"', False),
    ("detectable_format:json_format", {}, '```JSON\n{"a": [1, 2]}\n```', True),
    ("detectable_format:json_format", {}, "[1, 2]", True),
    ("detectable_format:json_format", {}, '{"a": 1} and more', False),
    ("detectable_format:title", {}, "<<Ode to Rain>>\nDrops fall.", True),
    ("detectable_format:title", {}, "<<  >> and <Ode>", False),
    ("detectable_format:title", {}, "<< >> Ode >>", True),  # IFEval reads the longest <<...>> on the line
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "Intro\n* one\n* two\n- three", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "**Bold** line\n* one\n* two", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "*tight\n  -dash", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "1. one\n2. two", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and **two**", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one* and * * and **", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*one\ntwo* three", False),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nIntro\nSECTION 2\nBody", True),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "Section 1\nIntro\nSection 2\nBody", False),  # the splitter is case-sensitive
    ("detectable_format:constrained_response", {}, "Sure. My answer is no.", True),
    ("detectable_format:constrained_response", {}, "My answer is nope.", False),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name] at [address]", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name] at (address)", False),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Bye.\nP.P.S. One more thing.", True),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Bye.\nP.S. One more thing.", False),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Bye.\np. s. see you", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Bye.\nPS see you", False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a haiku."}, " write a haiku. Leaves fall.", True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a haiku."}, "Sure! Write a haiku.", False),
    ("combination:two_responses", {}, "Rex ****** Max", True),
    ("combination:two_responses", {}, "******\nRex\n******\nMax\n******", True),
    ("combination:two_responses", {}, "Rex ****** ****** Max", False),
    ("combination:two_responses", {}, "Rex ****** Rex ", False),
    ("combination:two_responses", {}, "Rex ****** Max ****** Ace", False),
]


@pytest.mark.parametrize(("iid", "kwargs", "reply", "followed"), LABELLED)
def test_labelled_reply(iid, kwargs, reply, followed):
    assert check(iid, reply, kwargs) is followed


def test_every_checker_has_a_following_and_a_failing_reply():
    labels = {(iid, followed) for iid, _, _, followed in LABELLED}
    assert {iid for iid, _ in labels} == set(CHECKERS)
    assert all((iid, True) in labels and (iid, False) in labels for iid in CHECKERS)


def test_sentences_are_split_at_ends_not_at_abbreviations_or_initials():
    assert _sentences("Mr. and Mrs. Lee met Dr. J. Park, e.g. at noon. It went well! Did it? Yes.") == [
        "Mr. and Mrs. Lee met Dr. J. Park, e.g. at noon.", "It went well!", "Did it?", "Yes."]
    assert _sentences("So did I. Then we left.") == ["So did I.", "Then we left."]
    assert _sentences("No end mark\nnor here") == ["No end mark\nnor here"]
    assert _sentences("  ") == []


def test_unknown_relation_is_an_error_that_names_it():
    with pytest.raises(ValueError, match="unknown relation 'around'"):
        check("length_constraints:number_words", "a b", {"num_words": 2, "relation": "around"})


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/retention is not here")
@pytest.mark.parametrize(("key", "reply", "followed"), [
    # 1001: Shakespearean itinerary for Japan, no commas.
    (1001, "Hark! On the first day thou shalt see Tokyo and its towers bright.", True),
    (1001, "Hark, on the first day thou shalt see Tokyo.", False),
    # 1012: an email with a <<title>>, the request repeated first.
    (1012, "Write an email to my boss telling him that I am quitting. The email must contain a title "
           "wrapped in double angular brackets, i.e. <<title>>.\n<<Resignation>>\nDear boss, I quit.", True),
    (1012, "<<Resignation>>\nDear boss, I quit.", False),
])
def test_real_ifeval_items_with_hand_written_replies(key, reply, followed):
    rows = {r["key"]: r for r in map(json.loads, (SHARED / "ifeval_input_data.jsonl").read_text().splitlines())}
    row = rows[key]
    result = all(check(i, reply, kw) for i, kw in zip(row["instruction_id_list"], row["kwargs"], strict=True))
    assert result is followed
