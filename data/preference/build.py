"""Write the preference demo: the same facts answered concisely (chosen) or with rambling (rejected).

Every sentence here was written for this project (no third-party text). Both answers of a pair
are correct; they differ only in style, so what preference training changes is visible in the
length and the opening of the tuned model's answers, and in its preference accuracy on pairs it
never saw.

    python data/preference/build.py     # rewrites train.jsonl and validation.jsonl beside this file

- ``train.jsonl`` / ``validation.jsonl``: TRL's conversational preference rows,
  ``{"prompt": [user message], "chosen": [assistant message], "rejected": [assistant message]}``.
  The validation questions are not in the training file (held-out preference accuracy).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

FACTS = [
    ("What is the capital of France?", "Paris."),
    ("How many days are in a leap year?", "366."),
    ("What gas do plants take in from the air?", "Carbon dioxide."),
    ("What is the boiling point of water at sea level in Celsius?", "100 degrees Celsius."),
    ("Which planet is closest to the Sun?", "Mercury."),
    ("How many legs does a spider have?", "Eight."),
    ("What is the largest ocean on Earth?", "The Pacific Ocean."),
    ("What is 12 times 12?", "144."),
    ("Who wrote the play Romeo and Juliet?", "William Shakespeare."),
    ("What is the chemical symbol for gold?", "Au."),
    ("How many minutes are in an hour?", "60."),
    ("What is the freezing point of water in Fahrenheit?", "32 degrees Fahrenheit."),
    ("Which organ pumps blood through the body?", "The heart."),
    ("What is the square root of 81?", "9."),
    ("What language is mainly spoken in Brazil?", "Portuguese."),
    ("How many continents are there?", "Seven."),
    ("What is the tallest animal?", "The giraffe."),
    ("Which metal is liquid at room temperature?", "Mercury."),
    ("What do bees make?", "Honey."),
    ("How many sides does a hexagon have?", "Six."),
    ("What is the largest planet in the solar system?", "Jupiter."),
    ("What is the capital of Japan?", "Tokyo."),
    ("How many hours are in a day?", "24."),
    ("What is H2O commonly called?", "Water."),
    ("Which animal is known as the king of the jungle?", "The lion."),
    ("What is the opposite of hot?", "Cold."),
    ("How many wheels does a bicycle have?", "Two."),
    ("What color do you get by mixing blue and yellow?", "Green."),
    ("What is the main ingredient of bread?", "Flour."),
    ("Which season comes after winter?", "Spring."),
    ("What is 15 plus 27?", "42."),
    ("What is the capital of Italy?", "Rome."),
    ("How many strings does a standard guitar have?", "Six."),
    ("Which star is at the center of our solar system?", "The Sun."),
    ("What is frozen water called?", "Ice."),
    ("How many months have 31 days?", "Seven."),
    ("What instrument has 88 keys?", "The piano."),
    ("What is the smallest prime number?", "2."),
    ("Which direction does the Sun rise in?", "The east."),
    ("What do caterpillars turn into?", "Butterflies or moths."),
    ("What is the capital of Canada?", "Ottawa."),
    ("How many bones are in the adult human body?", "206."),
    ("What is the hardest natural substance?", "Diamond."),
    ("Which planet is known as the Red Planet?", "Mars."),
    ("What is 100 divided by 4?", "25."),
    ("What do you call a baby cat?", "A kitten."),
    ("How many players are on a soccer team on the field?", "Eleven."),
    ("What is the capital of Spain?", "Madrid."),
    ("Which gas do humans breathe out?", "Carbon dioxide."),
    ("What is the longest river in Africa?", "The Nile."),
    ("How many seconds are in a minute?", "60."),
    ("What shape has three sides?", "A triangle."),
    ("Which fruit is dried to make raisins?", "Grapes."),
    ("What is the capital of Germany?", "Berlin."),
    ("How many zeros are in one thousand?", "Three."),
    ("What does a thermometer measure?", "Temperature."),
    ("Which animal gives us wool?", "The sheep."),
    ("What is the primary language of Mexico?", "Spanish."),
    ("How many weeks are in a year?", "52."),
    ("What is the nearest star to Earth?", "The Sun."),
]

OPENINGS = [
    "Great question! This is something a lot of people wonder about, so let me take a moment to think it through carefully before I answer.",
    "Oh, what an interesting thing to ask! There is actually quite a bit that could be said here, and I want to make sure I cover it properly.",
    "Thank you so much for asking this. Before I get to the answer, it is worth noting that questions like this one come up all the time.",
    "Well, let me see. I have to say, this is one of those topics that seems simple at first but deserves a thoughtful reply.",
]
CLOSINGS = [
    "I hope this long explanation helps, and please feel free to ask me anything else you might be curious about!",
    "So, to sum everything up after all of that, that is the answer. Let me know if you would like me to go on at greater length!",
    "Anyway, that is my answer, although I could of course keep talking about this for quite a while longer if you want.",
    "There you have it! I really enjoyed thinking about this with you, and I am always happy to elaborate further.",
]


def rambling(answer: str, rng: random.Random) -> str:
    fact = answer.rstrip(".")
    return (
        f"{rng.choice(OPENINGS)} After considering it from several angles, the answer is {fact}. {rng.choice(CLOSINGS)}"
    )


def pair(question: str, answer: str, rng: random.Random) -> dict:
    return {
        "prompt": [{"role": "user", "content": question}],
        "chosen": [{"role": "assistant", "content": answer}],
        "rejected": [{"role": "assistant", "content": rambling(answer, rng)}],
    }


def main() -> None:
    rng = random.Random(7)
    facts = list(FACTS)
    rng.shuffle(facts)
    held_out = len(facts) // 5
    splits = {"validation": facts[:held_out], "train": facts[held_out:]}
    folder = Path(__file__).resolve().parent
    for name, rows in splits.items():
        lines = [json.dumps(pair(question, answer, rng)) for question, answer in rows]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"{name}.jsonl: {len(lines)} pairs")


if __name__ == "__main__":
    main()
