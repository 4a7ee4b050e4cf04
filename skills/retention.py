"""Retention prompts: everyday requests the learner rehearses while it learns a new tool.

During a learning run the student is pulled back toward the champion on these (learner.retention):
either by sampling its own answers and scoring them against the champion (on-policy KL), or by
training on the champion's greedy answers (self-replay). They are asked plain and with installed
tools offered (requests that need none of the tools), beside the prompts of earlier skills'
demonstrations, which come from memory.

Written here for this purpose. They are not evaluation items: the gate's probe sets and every
skill's eval cases must never appear among them (the gate's tests check disjointness), so keep
them generic everyday requests, not quiz questions with a single right answer.
"""

from __future__ import annotations

EVERYDAY: tuple[str, ...] = (
    "Give me three ideas for a quick weekday dinner.",
    "Write a two-sentence birthday message for my sister.",
    "How can I fall asleep faster at night?",
    "Suggest a name for a small neighbourhood bakery.",
    "What are some good habits for studying for an exam?",
    "Write a short, polite email asking my landlord to fix a leaking tap.",
    "Explain in simple words what a budget is.",
    "I have a job interview tomorrow. Any tips?",
    "Recommend a few indoor activities for a rainy afternoon with kids.",
    "How do I keep houseplants alive when I travel for a week?",
    "Write a haiku about autumn leaves.",
    "What should I say when I thank a colleague for their help?",
    "Give me a simple stretching routine for the morning.",
    "How can I make my small kitchen feel less cluttered?",
    "Summarise why regular exercise is good for you in two sentences.",
    "Write a friendly reminder message for a team meeting on Monday.",
    "What is a good way to start learning to play the guitar?",
    "Suggest three questions to ask at the end of a job interview.",
    "How do I politely decline an invitation to a party?",
    "Describe a relaxing weekend in the countryside.",
    "Give me a short pep talk before my presentation.",
    "What can I do to drink more water during the day?",
    "Write a short product description for a reusable water bottle.",
    "How do I explain to a child why we brush our teeth?",
    "List a few things to check before a long car trip.",
    "What are some easy ways to save money on groceries?",
    "Write a one-paragraph story about a lost umbrella.",
    "How should I prepare for my first day at a new job?",
    "Suggest a simple plan for cleaning the house in one hour.",
    "What is a kind way to give feedback on a friend's cooking?",
    "Write a short toast for a friend's wedding.",
    "How can I stay motivated when working from home?",
    "Give me two ideas for a handmade gift.",
    "Explain what a password manager does, briefly.",
    "How do I make a cup of tea properly?",
    "Write a short apology message for missing a phone call.",
    "What are good snacks to bring on a hike?",
    "Help me write a caption for a photo of a sunset at the beach.",
    "How can I be a better listener in conversations?",
    "Suggest a short morning routine for a busy parent.",
    "Write a thank-you note to a teacher at the end of the school year.",
    "What can I cook with rice, eggs and spinach?",
    "Give me tips for keeping a tidy desk.",
    "How do I introduce myself in a new club?",
    "Write a limerick about a sleepy cat.",
    "What should I think about before adopting a dog?",
    "How can I reduce stress before an exam?",
    "Describe the smell of fresh bread in one sentence.",
    "Hi! How are you today?",
    "Can you help me plan a picnic for four people?",
    "Tell me a fun fact about octopuses in a friendly way.",
    "What is a good way to remember people's names?",
    "Write a short welcome message for new members of a book club.",
    "How do I start a conversation with a neighbour I have never met?",
    "Give me a gentle reminder to take a break from the screen.",
    "Suggest a title for a blog post about growing tomatoes.",
    "Thanks for your help earlier!",
    "What should I write in a get-well-soon card?",
    "How can I make a boring commute more enjoyable?",
    "Explain what recycling is to a five-year-old.",
    # short questions and small talk: with a tool offered, a small model that has just learned it
    # tends to call it for these (measured: benchmarks/results/README.md, issue 12)
    "What language do people speak in Brazil?",
    "How many legs does a spider have?",
    "Which planet is closest to the sun?",
    "What do bees make?",
    "How many minutes are there in an hour?",
    "What is the opposite of hot?",
    "Which ocean lies between Europe and America?",
    "What do caterpillars turn into?",
    "Why do leaves change colour in autumn?",
    "What is the largest animal on Earth?",
    "What does a baker do all day?",
    "Good morning!",
    "Hello there.",
    "See you tomorrow!",
    "I'm bored. Any ideas?",
    "That's great news, thank you.",
    "Are you a robot?",
    "What's your favourite season and why?",
    "Tell me something nice.",
    "How do you say thank you in French?",
    "What rhymes with cat?",
    "Is a tomato a fruit or a vegetable?",
    "Can you spell the word necessary?",
    "What is a synonym for happy?",
    "Why is the sea salty?",
    "Do penguins live at the North Pole?",
    "What time of year do birds fly south?",
    "Which is heavier, a kilogram of feathers or a kilogram of iron?",
)


def everyday_messages() -> list[list[dict]]:
    """Each prompt as a one-turn conversation (the system message is the prompt format's)."""
    return [[{"role": "user", "content": p}] for p in EVERYDAY]
