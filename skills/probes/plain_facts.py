"""Plain facts: everyday questions with one short right answer that a small chat model knows.

TriviaQA and NQ-open are hard for a 135M model (its base answers 3–4 of 30), so *retained* rests on
a handful of items and a candidate that forgets "What is the capital of France?" passes them
(measured: a noise-damaged copy that answers "L'Étoile de la Cité" still passed; benchmarks/results
README, issue 11 calibration). These questions are the ones a user actually asks and expects right.
Scored like the closed-book sets (alias match on the generated answer, judged on *retained*).

Written here for the gate. They are evaluation items: the learner's retention prompts must never
overlap them (tests/test_gate_suites.py checks).
"""

from __future__ import annotations

from skills.probes.closed_book import ClosedBookProbe

NAME = "plain_facts"

FACTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", ("Paris",)),
    ("What is the capital of Japan?", ("Tokyo",)),
    ("What is the capital of Germany?", ("Berlin",)),
    ("What is the capital of Spain?", ("Madrid",)),
    ("What is the capital of the United Kingdom?", ("London",)),
    ("What is the capital of Russia?", ("Moscow",)),
    ("What is the capital of Egypt?", ("Cairo",)),
    ("What is the capital of Canada?", ("Ottawa",)),
    ("What is the capital of China?", ("Beijing", "Peking")),
    ("What is the capital of Greece?", ("Athens",)),
    ("What is 2 plus 2?", ("4", "four")),
    ("What is 10 minus 3?", ("7", "seven")),
    ("What is 5 times 6?", ("30", "thirty")),
    ("How many days are there in a week?", ("7", "seven")),
    ("How many months are there in a year?", ("12", "twelve")),
    ("How many hours are there in a day?", ("24", "twenty-four", "twenty four")),
    ("How many sides does a triangle have?", ("3", "three")),
    ("How many continents are there?", ("7", "seven")),
    ("What colour is the sky on a clear day?", ("blue",)),
    ("What colour are bananas when they are ripe?", ("yellow",)),
    ("What gas do humans need to breathe to live?", ("oxygen",)),
    ("What is the chemical formula of water?", ("H2O",)),
    ("What is frozen water called?", ("ice",)),
    ("Which planet do we live on?", ("Earth",)),
    ("What is the largest planet in our solar system?", ("Jupiter",)),
    ("Which star is at the centre of our solar system?", ("Sun", "the Sun")),
    ("What is the natural satellite of the Earth called?", ("Moon", "the Moon")),
    ("Which animal is known as the king of the jungle?", ("lion",)),
    ("What animal says moo?", ("cow",)),
    ("Which is the biggest ocean?", ("Pacific",)),
    ("What is the tallest mountain in the world?", ("Everest", "Mount Everest")),
    ("What is the longest river in Africa?", ("Nile",)),
    ("Who painted the ceiling of the Sistine Chapel?", ("Michelangelo",)),
    ("Who was the first president of the United States?", ("George Washington", "Washington")),
    ("Who developed the theory of relativity?", ("Einstein", "Albert Einstein")),
    ("Who wrote the play Hamlet?", ("Shakespeare", "William Shakespeare")),
    ("What is the main language spoken in Mexico?", ("Spanish",)),
    ("What currency is used in Japan?", ("yen",)),
    ("What is the opposite of up?", ("down",)),
    ("What do plants need from the sun to grow?", ("light", "sunlight", "energy")),
    ("At what temperature in Celsius does water freeze?", ("0", "zero")),
    ("What is the hardest natural substance?", ("diamond",)),
    ("Which organ pumps blood through the human body?", ("heart",)),
    ("How many wheels does a bicycle have?", ("2", "two")),
    ("What is the first letter of the English alphabet?", ("A",)),
    ("What is the capital of Portugal?", ("Lisbon",)),
    ("Which country is home to the kangaroo?", ("Australia",)),
    ("What is the largest country in the world by area?", ("Russia",)),
)


def plain_facts_rows() -> list[dict]:
    return [{"id": f"pf{i:02d}", "question": q, "aliases": list(a)} for i, (q, a) in enumerate(FACTS)]


def plain_facts_probe(rows: list[dict] | None = None) -> ClosedBookProbe:
    return ClosedBookProbe(NAME, rows if rows is not None else plain_facts_rows())
