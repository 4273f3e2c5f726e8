"""Write the preference demo: short questions, each answered in one correct phrase (chosen) or
as the base model answers it (rejected).

The questions and the chosen answers were written for this project (no third-party text). The
rejected answers are SmolLM2-135M-Instruct's own greedy answers (on-policy pairs): full sentences,
often padded and sometimes wrong. Preference training against the model's own habits is what
moves its generations; pairs whose rejected side it would never write (an earlier version of this
demo used invented rambling) are ranked correctly without changing what it says. What changes is
visible in the length and correctness of the tuned model's answers to questions it never saw.

    python data/preference/build.py     # rewrites train.jsonl and validation.jsonl (about 30 s on 2 cores)

- ``train.jsonl`` / ``validation.jsonl``: TRL's conversational preference rows,
  ``{"prompt": [user message], "chosen": [assistant message], "rejected": [assistant message]}``.
  The validation questions are not in the training file (held-out preference accuracy).
"""

from __future__ import annotations

import json
import random
import sys
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

MODEL = "smollm2-135m-instruct"
MAX_NEW_TOKENS = 96


def base_answers(questions: list[str]) -> list[str]:
    """The base model's own greedy answers: the rejected side (on-policy pairs)."""
    import torch

    from plugins.models.loaders import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(MODEL)
    tokenizer.padding_side = "left"
    model = load_causal_lm(MODEL).eval()
    answers = []
    for start in range(0, len(questions), 8):
        batch = questions[start : start + 8]
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            for q in batch
        ]
        encoded = tokenizer(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            output = model.generate(**encoded, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
        prompt_length = encoded["input_ids"].shape[1]
        answers += [tokenizer.decode(row[prompt_length:], skip_special_tokens=True).strip() for row in output]
    return answers


def pair(question: str, answer: str, base_answer: str) -> dict:
    return {
        "prompt": [{"role": "user", "content": question}],
        "chosen": [{"role": "assistant", "content": answer}],
        "rejected": [{"role": "assistant", "content": base_answer}],
    }


def main() -> None:
    rng = random.Random(7)
    facts = list(FACTS)
    rng.shuffle(facts)
    held_out = len(facts) // 5
    splits = {"validation": facts[:held_out], "train": facts[held_out:]}
    folder = Path(__file__).resolve().parent
    sys.path.insert(0, str(folder.parents[1]))  # the project's model loaders
    rejected = dict(zip([q for q, _ in facts], base_answers([q for q, _ in facts]), strict=True))
    for name, rows in splits.items():
        lines = [json.dumps(pair(question, answer, rejected[question])) for question, answer in rows]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"{name}.jsonl: {len(lines)} pairs")


if __name__ == "__main__":
    main()
