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

import re

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
    "Hey, I hope your day is off to a good start.",
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
    "Nice to meet you.",
    "See you tomorrow!",
    "I'm bored. Any ideas?",
    "That's great news, thank you.",
    "Are you a robot?",
    "What's your favourite season and why?",
    "Say something encouraging to cheer me up.",
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


# Requests that sound like a job for a tool, asked of an agent that has no tool for them: the
# right reply is plain text (what it can say, or that it cannot do it), never a call to whichever
# installed tool looks closest. A small model that has just learned a tool calls it for exactly
# these (measured: benchmarks/results/README.md, issue 12: "What is the current time in …?" →
# a call to the newest skill's tool). Each carries the topic words that an installed tool
# serving it would name: a request is left out of a run whose installed tools mention any of
# them (`task_messages`), so the learner never rehearses "do not call" for a tool it has.
TASKS: tuple[tuple[str, str], ...] = (
    ("Is it going to be sunny in Lisbon on Saturday?", "weather forecast sunny"),
    ("Will it rain in Manchester this afternoon?", "weather forecast rain"),
    ("Set an alarm for 6:30 tomorrow morning.", "alarm clock"),
    ("Start a ten-minute timer for the pasta.", "timer"),
    ("Text my brother that I'll be twenty minutes late.", "message sms text"),
    ("Send an email to Priya saying the report is ready.", "email mail"),
    ("Book a table for two at an Italian place tonight at eight.", "restaurant reservation table"),
    ("Find me a flight from Paris to Rome next Friday.", "flight airline"),
    ("Reserve a double room in Edinburgh for the weekend.", "hotel room reservation"),
    ("Call a taxi to take me to the train station.", "taxi ride cab"),
    ("What's the share price of Nintendo right now?", "stock share price market"),
    ("How many euros do I get for 200 Swiss francs today?", "currency exchange"),
    ("Turn off the lights in the living room.", "light lights lamp"),
    ("Order a large margherita pizza for delivery.", "order delivery food pizza"),
    ("Where is my parcel? The tracking number is 4471-22.", "parcel package tracking shipment"),
    ("Give me driving directions to the nearest petrol station.", "directions route navigation map"),
    ("What was the final score of yesterday's rugby game?", "sports score rugby"),
    ("Add milk and bread to my shopping list.", "shopping grocery todo"),
    ("Remind me to water the plants on Sunday.", "reminder"),
    ("Put a dentist appointment in my calendar for Tuesday at 3.", "calendar appointment event"),
    ("Search the web for the opening hours of the city library.", "web internet browser"),
    ("Read me today's top news headlines.", "news headline"),
    ("Check my bank balance, please.", "bank account balance"),
    ("Pay the electricity bill that is due this week.", "payment bill pay"),
    ("Buy two tickets for the jazz concert on Saturday.", "ticket concert event"),
    ("Translate my last email into German and send it back.", "translate translation email"),
    ("Download the latest version of the photo editor.", "download install software"),
    ("Back up the files on my laptop to the cloud.", "backup file storage cloud"),
    ("Lock the front door.", "lock door"),
    ("Set the thermostat to 21 degrees.", "thermostat heating"),
    ("Find a dog walker near me for next week.", "pet dog walker service provider"),
    ("How long will the number 12 bus take to get here?", "bus transit transport schedule"),
    ("Is the pharmacy on Elm Street open right now?", "opening hours store place"),
    ("Cancel my gym membership.", "membership subscription cancel"),
    ("Rent a car at Lyon airport for three days.", "car rental"),
    ("Check whether my train to Leeds is delayed.", "train rail transport"),
    ("Share my location with Sam for the next hour.", "gps sharing"),
    ("Post a photo of my lunch to my social media.", "social photo"),
    ("Record a voice memo that says 'buy stamps'.", "voice memo record note"),
    ("Log 30 minutes of running in my fitness tracker.", "fitness workout health tracker"),
)


def task_messages(tools: list[dict] | None = None) -> list[list[dict]]:
    """The tool-sounding requests that none of `tools` serves (by the topic words: a request
    whose topic any tool's name or description mentions is left out), one-turn conversations."""
    text = " ".join(f"{t.get('name', '')} {t.get('description', '')}" for t in tools or []).lower()
    words = set(re.findall(r"[a-z]+", text.replace("_", " ")))
    return [[{"role": "user", "content": q}] for q, topics in TASKS if not words & set(topics.split())]


def everyday_messages() -> list[list[dict]]:
    """Each prompt as a one-turn conversation (the system message is the prompt format's)."""
    return [[{"role": "user", "content": p}] for p in EVERYDAY]


def unneeded_requests(tools: list[dict] | None = None) -> list[str]:
    """Requests that need none of `tools`: the everyday prompts and the tool-sounding ones no
    tool serves. The tool router's examples of "no tool" (agent.routing.Router)."""
    return [m[0]["content"] for m in everyday_messages() + task_messages(tools)]
