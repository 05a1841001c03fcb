"""Write examples/country-facts-chat.jsonl: questions about countries, answered in a fixed JSON format.

The base SmolLM2 answers such questions in prose; after the instruction LoRA of the
`smollm2-chat-lora` recipe it answers {"country": ..., "asked": ..., "answer": ...}.
Run: python examples/make_country_facts.py
"""

from __future__ import annotations

import json
from pathlib import Path

# (country, capital, continent, main language)
FACTS = [
    ("France", "Paris", "Europe", "French"), ("Germany", "Berlin", "Europe", "German"),
    ("Spain", "Madrid", "Europe", "Spanish"), ("Portugal", "Lisbon", "Europe", "Portuguese"),
    ("Netherlands", "Amsterdam", "Europe", "Dutch"), ("Belgium", "Brussels", "Europe", "Dutch"),
    ("Austria", "Vienna", "Europe", "German"), ("Switzerland", "Bern", "Europe", "German"),
    ("Poland", "Warsaw", "Europe", "Polish"), ("Sweden", "Stockholm", "Europe", "Swedish"),
    ("Norway", "Oslo", "Europe", "Norwegian"), ("Finland", "Helsinki", "Europe", "Finnish"),
    ("Denmark", "Copenhagen", "Europe", "Danish"), ("Greece", "Athens", "Europe", "Greek"),
    ("Hungary", "Budapest", "Europe", "Hungarian"), ("Ireland", "Dublin", "Europe", "English"),
    ("Czechia", "Prague", "Europe", "Czech"), ("Romania", "Bucharest", "Europe", "Romanian"),
    ("Italy", "Rome", "Europe", "Italian"), ("Ukraine", "Kyiv", "Europe", "Ukrainian"),
    ("Japan", "Tokyo", "Asia", "Japanese"), ("China", "Beijing", "Asia", "Mandarin"),
    ("India", "New Delhi", "Asia", "Hindi"), ("Thailand", "Bangkok", "Asia", "Thai"),
    ("Vietnam", "Hanoi", "Asia", "Vietnamese"), ("Indonesia", "Jakarta", "Asia", "Indonesian"),
    ("South Korea", "Seoul", "Asia", "Korean"), ("Turkey", "Ankara", "Asia", "Turkish"),
    ("Iran", "Tehran", "Asia", "Persian"), ("Pakistan", "Islamabad", "Asia", "Urdu"),
    ("Nepal", "Kathmandu", "Asia", "Nepali"), ("Philippines", "Manila", "Asia", "Filipino"),
    ("Egypt", "Cairo", "Africa", "Arabic"), ("Kenya", "Nairobi", "Africa", "Swahili"),
    ("Nigeria", "Abuja", "Africa", "English"), ("Ethiopia", "Addis Ababa", "Africa", "Amharic"),
    ("Morocco", "Rabat", "Africa", "Arabic"), ("Ghana", "Accra", "Africa", "English"),
    ("Senegal", "Dakar", "Africa", "French"), ("Tanzania", "Dodoma", "Africa", "Swahili"),
    ("Brazil", "Brasilia", "South America", "Portuguese"), ("Argentina", "Buenos Aires", "South America", "Spanish"),
    ("Peru", "Lima", "South America", "Spanish"), ("Chile", "Santiago", "South America", "Spanish"),
    ("Colombia", "Bogota", "South America", "Spanish"), ("Venezuela", "Caracas", "South America", "Spanish"),
    ("Canada", "Ottawa", "North America", "English"), ("Mexico", "Mexico City", "North America", "Spanish"),
    ("Cuba", "Havana", "North America", "Spanish"), ("Jamaica", "Kingston", "North America", "English"),
    ("Australia", "Canberra", "Oceania", "English"), ("New Zealand", "Wellington", "Oceania", "English"),
]
QUESTIONS = {
    "capital": ["What is the capital of {c}?", "Which city is the capital of {c}?", "Tell me the capital city of {c}."],
    "continent": ["Which continent is {c} in?", "On what continent is {c}?", "Where in the world is {c}?"],
    "language": ["What language do people speak in {c}?", "What is the main language of {c}?",
                 "Which language is spoken in {c}?"],
}


def conversations() -> list[dict]:
    """Three conversations per country (capital, continent, language), question wording varied."""
    out = []
    for i, (country, capital, continent, language) in enumerate(FACTS):
        for j, (asked, answer) in enumerate((("capital", capital), ("continent", continent), ("language", language))):
            question = QUESTIONS[asked][(i + j) % 3].format(c=country)
            reply = json.dumps({"country": country, "asked": asked, "answer": answer})
            out.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]})
    return out


if __name__ == "__main__":
    path = Path(__file__).with_name("country-facts-chat.jsonl")
    path.write_text("".join(json.dumps(c) + "\n" for c in conversations()), encoding="utf-8")
    print(f"wrote {path} ({len(conversations())} conversations)")
