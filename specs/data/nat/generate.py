"""Writes the synthetic NAT-format sample data in this directory (run: python generate.py).

NAT's own data has no licence, so these records are written from scratch in NAT's exact record
shape (`data/dataset/<task>/<task>_gpt-3.5_{positive,negative}.json`): a JSON array of
`{"conversations": [{role, content, loss}], "info": {...}, "id": ..., "source": <temperature>}`,
trajectories without their instruction and question (the question is joined from a separate file
by `id`). The facts are simplified and some are deliberately wrong in the negatives.
"""
import hashlib
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPS = ("0.2", "0.5", "0.7")


def qid(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def turn(role: str, content: str) -> dict:
    return {"role": role, "content": content, "loss": role == "assistant"}


def step(thought: str, action: str) -> dict:
    return turn("assistant", f"Thought: {thought}\n\nAction: {action}")


def obs(text: str) -> dict:
    return turn("user", f"Observation: {text}")


END = obs("Episode finished")

# (question, answer, search query, snippet) — StrategyQA-style yes/no questions.
STRATEGY = [
    ("Could a llama birth twice during the War in Vietnam (1945-46)?", False, "llama gestation period",
     "#1: Llamas have a gestation period of about 11.5 months (350 days)."),
    ("Is the Eiffel Tower taller than the Statue of Liberty?", True, "Eiffel Tower height",
     "#1: The Eiffel Tower is 330 metres tall. #2: The Statue of Liberty is 93 metres tall."),
    ("Would a honey badger fit inside a standard shoebox?", False, "honey badger body length",
     "#1: Adult honey badgers measure 55 to 77 cm in body length."),
    ("Did Shakespeare ever use a typewriter?", False, "when was the typewriter invented",
     "#1: The first commercially successful typewriter was invented in 1868."),
    ("Can a goldfish survive in the Dead Sea?", False, "Dead Sea salinity fish",
     "#1: The Dead Sea is about 34% salt; no fish can live in it."),
    ("Is Mount Everest in the Himalayas?", True, "Mount Everest mountain range",
     "#1: Mount Everest is Earth's highest mountain, in the Mahalangur Himal sub-range of the Himalayas."),
    ("Would a polar bear feel at home in the Sahara?", False, "polar bear habitat",
     "#1: Polar bears live in the Arctic, on sea ice and coastal areas."),
    ("Could Abraham Lincoln have watched a baseball game?", True, "origin of baseball date",
     "#1: Organised baseball was played in the United States from the 1840s."),
    ("Is a tomato botanically a fruit?", True, "is a tomato a fruit botanically",
     "#1: Botanically, a tomato is a berry, the fruit of the tomato plant."),
    ("Did the Roman Empire use gunpowder?", False, "invention of gunpowder",
     "#1: Gunpowder was invented in 9th-century China, after the fall of the Western Roman Empire."),
    ("Can penguins fly?", False, "can penguins fly",
     "#1: Penguins are flightless birds; their wings have evolved into flippers."),
    ("Is Antarctica larger than Europe?", True, "area of Antarctica vs Europe",
     "#1: Antarctica covers 14.2 million km2; Europe covers about 10.2 million km2."),
    ("Would a blue whale fit in an Olympic swimming pool?", True, "blue whale length",
     "#1: Blue whales reach up to 30 metres; an Olympic pool is 50 metres long."),
    ("Did Marie Curie win more than one Nobel Prize?", True, "Marie Curie Nobel prizes",
     "#1: Marie Curie won the Nobel Prize in Physics (1903) and in Chemistry (1911)."),
    ("Is the Great Wall of China visible from the Moon with the naked eye?", False,
     "Great Wall visible from Moon", "#1: The Great Wall is not visible to the naked eye from the Moon."),
    ("Could a cheetah outrun a car on a highway?", False, "cheetah top speed",
     "#1: Cheetahs reach 100 to 120 km/h in short bursts of about 30 seconds."),
    ("Is coffee native to Ethiopia?", True, "origin of coffee plant",
     "#1: Coffea arabica is native to the highlands of Ethiopia."),
    ("Did Beethoven compose music after losing his hearing?", True, "Beethoven deafness ninth symphony",
     "#1: Beethoven composed his Ninth Symphony when he was almost completely deaf."),
    ("Would an ostrich egg fit in a teacup?", False, "ostrich egg size",
     "#1: An ostrich egg is about 15 cm long and weighs 1.4 kg."),
    ("Is Venus the hottest planet in the Solar System?", True, "hottest planet solar system",
     "#1: Venus is the hottest planet, with surface temperatures of about 465 C."),
    ("Could the Titanic's passengers have used mobile phones?", False, "first mobile phone year",
     "#1: The first handheld mobile phone call was made in 1973."),
    ("Is sushi traditionally a Japanese dish?", True, "origin of sushi",
     "#1: Sushi is a traditional Japanese dish of vinegared rice."),
    ("Do spiders have six legs?", False, "how many legs does a spider have",
     "#1: Spiders have eight legs."),
    ("Would a grand piano fit through a standard door upright?", False, "grand piano dimensions",
     "#1: Grand pianos are about 1.5 m wide, wider than a standard 0.9 m door."),
    ("Is the Amazon river longer than the Thames?", True, "Amazon river length",
     "#1: The Amazon is about 6,400 km long; the Thames is 346 km."),
    ("Could Cleopatra have seen the pyramids of Giza?", True, "Cleopatra era pyramids age",
     "#1: The pyramids of Giza were built around 2500 BC; Cleopatra lived 69-30 BC."),
]


def yn(b: bool) -> str:
    return "Yes" if b else "No"


def strategy_positive(i: int, q: str, ans: bool, query: str, snippet: str) -> dict:
    shape = i % 4  # most trajectories are 4 turns, some 6, some 2 (as in NAT's file)
    convs = [step(f"I need to find out about {query} to answer the question.", f"search[{query}]"), obs(" " + snippet)]
    if shape == 1:
        convs += [step("I should double-check this with another search.", f"search[{query} facts]"), obs(" " + snippet)]
    convs += [step(f"Based on this, the answer is {yn(ans).lower()}.", f"finish[{yn(ans)}]"), END]
    if shape == 3:
        convs = [step(f"I know the answer: {yn(ans).lower()}.", f"finish[{yn(ans)}]"), END]
    return {"conversations": convs, "info": {"reward": True, "acc": True, "gt": ans, "pred": yn(ans)},
            "id": qid(q), "source": TEMPS[i % 3]}


def strategy_negative(i: int, k: int, q: str, ans: bool, query: str, snippet: str, kind: str = "wrong") -> dict:
    wrong = yn(not ans)
    info = {"reward": False, "acc": False, "gt": ans, "pred": wrong}
    if kind == "wrong":
        openers = ("Let me search for", "I should look up", "First I will search", "I need to know about")
        convs = [step(f"{openers[k % 4]} {query}.", f"search[{query}]"), obs(" " + snippet)]
        if k % 2:
            convs += [step("The result is not clear; I will search again.", f"search[{q}]"), obs(" " + snippet)]
        convs += [step(f"I think the answer is {wrong.lower()}.", f"finish[{wrong}]"), END]
    elif kind == "unfinished":  # ran out of steps: no finish, no pred
        convs = [step(f"Let me search for {query}.", f"search[{query}]"), obs(" " + snippet),
                 step("I need more information.", f"search[{query} details]"), obs(" " + snippet)]
        info = {"reward": False, "acc": False, "gt": ans}
    elif kind == "empty_observation":
        convs = [step(f"Let me search for {query}.", f"search[{query}]"), obs(""),
                 step(f"Nothing found; I guess {wrong.lower()}.", f"finish[{wrong}]"), END]
    elif kind == "bad_action":  # malformed action syntax
        convs = [turn("assistant", f"Thought: Let me look it up.\n\nAction: search {query}"), obs(" " + snippet),
                 step(f"So {wrong.lower()}.", f"finish[{wrong}]"), END]
    elif kind == "empty":
        convs = []
    else:
        raise ValueError(kind)
    return {"conversations": convs, "info": info, "id": qid(q), "source": TEMPS[(i + k) % 3]}


# Negatives per question index (NAT has 1-3 per question; index 4 has 4 to exercise the cap).
NEG_COUNTS = {0: 3, 1: 2, 2: 1, 3: 3, 4: 4, 5: 2, 6: 1, 7: 2, 8: 3, 9: 1, 10: 2, 11: 2, 12: 3, 13: 1, 14: 2,
              15: 2, 16: 3, 17: 1, 18: 2, 19: 3, 24: 2, 25: 3}
# Quality problems, as (question index, k) → kind.
NEG_KINDS = {(0, 2): "unfinished", (8, 1): "unfinished", (3, 0): "empty_observation", (12, 2): "bad_action",
             (16, 0): "empty", (19, 2): "empty"}
POSITIVE_QUESTIONS = range(24)  # questions 24 and 25 only have negatives


def write_strategyqa() -> None:
    pos = [strategy_positive(i, *STRATEGY[i]) for i in POSITIVE_QUESTIONS]
    neg = [strategy_negative(i, k, *STRATEGY[i], NEG_KINDS.get((i, k), "wrong"))
           for i, n in sorted(NEG_COUNTS.items()) for k in range(n)]
    (HERE / "strategyqa_positive.json").write_text(json.dumps(pos, indent=1, ensure_ascii=False) + "\n")
    (HERE / "strategyqa_negative.json").write_text(json.dumps(neg, indent=1, ensure_ascii=False) + "\n")
    with open(HERE / "strategyqa_questions.jsonl", "w") as f:
        for q, ans, *_ in STRATEGY:
            f.write(json.dumps({"id": qid(q), "question": q, "answer": ans}) + "\n")
    # A held-out "dev" set: question 5 verbatim (exact match) and question 9 reworded (n-gram overlap).
    with open(HERE / "strategyqa_dev.jsonl", "w") as f:
        f.write(json.dumps({"question": STRATEGY[5][0], "answer": STRATEGY[5][1]}) + "\n")
        f.write(json.dumps({"question": "Tell me: did the Roman Empire use gunpowder in battle?", "answer": False}) + "\n")
        f.write(json.dumps({"question": "Is the Moon made of cheese?", "answer": False}) + "\n")


# (question, answer, query, snippet, [(pred, f1), ...] for negatives) — HotpotQA-style.
HOTPOT = [
    ("Which city is the capital of the country where the Eiffel Tower stands?", "Paris", "Eiffel Tower country",
     "#1: The Eiffel Tower is in Paris, the capital of France.", [("Lyon", 0.0), ("Paris, Texas", 0.5)]),
    ("Who directed the film that won Best Picture at the 1998 Academy Awards?", "James Cameron",
     "Best Picture 1998 Academy Awards", "#1: Titanic (1997), directed by James Cameron, won Best Picture.",
     [("Steven Spielberg", 0.0), ("James", 0.667), ("Cameron Crowe", 0.5)]),
    ("What is the nationality of the author of 'One Hundred Years of Solitude'?", "Colombian",
     "One Hundred Years of Solitude author", "#1: Gabriel Garcia Marquez was a Colombian novelist.",
     [("Mexican", 0.0), ("South American Colombian writer", 0.4)]),
    ("In which year did the band that recorded 'Abbey Road' break up?", "1970", "Abbey Road band",
     "#1: Abbey Road is by the Beatles, who broke up in 1970.", [("1969", 0.0)]),
    ("Which river flows through the city where the Charles Bridge is located?", "Vltava", "Charles Bridge city",
     "#1: The Charles Bridge crosses the Vltava river in Prague.",
     [("Danube", 0.0), ("the Vltava river in Prague", 0.333), ("Elbe", 0.0), ("Moldau Vltava", 0.667)]),
    ("What sport does the team that plays at Anfield compete in?", "football", "Anfield team",
     "#1: Anfield is home to Liverpool F.C., an association football club.", [("rugby", 0.0)]),
    ("Who was the first wife of the founder of Microsoft?", "Melinda French Gates", "Microsoft founder wife",
     "#1: Bill Gates married Melinda French in 1994.", [("Melinda", 0.5), ("Paul Allen", 0.0)]),
    ("Which element has the atomic number equal to the number of planets in the Solar System?", "oxygen",
     "number of planets solar system", "#1: The Solar System has eight planets; element 8 is oxygen.",
     [("carbon", 0.0), ("oxygen gas", 0.8)]),
    ("What is the highest mountain in the country whose capital is Tokyo?", "Mount Fuji", "highest mountain Japan",
     "#1: Mount Fuji is the highest mountain in Japan.", [("Fuji", 0.667), ("Mount Kita", 0.5)]),
    ("Which ocean lies to the west of the country where Lisbon is the capital?", "Atlantic Ocean",
     "Portugal ocean west", "#1: Portugal borders the Atlantic Ocean to the west.",
     [("Pacific Ocean", 0.5), ("Mediterranean", 0.0), ("North Atlantic", 0.5)]),
    ("Who painted the ceiling of the chapel located in Vatican City?", "Michelangelo", "Sistine Chapel ceiling painter",
     "#1: The Sistine Chapel ceiling was painted by Michelangelo.", [("Raphael", 0.0)]),
    ("What language is spoken in the country where the city of Curitiba is located?", "Portuguese",
     "Curitiba country language", "#1: Curitiba is in Brazil, where Portuguese is spoken.",
     [("Spanish", 0.0), ("Brazilian Portuguese", 0.667)]),
]


def hotpot_positive(i: int, q: str, a: str, query: str, snippet: str) -> dict:
    convs = [step(f"I need to search {query}.", f"search[{query}]"), obs(" " + snippet),
             step(f"The answer is {a}.", f"finish[{a}]"), END]
    return {"conversations": convs,
            "info": {"reward": True, "em": True, "f1": 1.0, "gt": a, "pred": a},
            "id": qid(q), "source": TEMPS[i % 3]}


def hotpot_negative(i: int, k: int, q: str, a: str, query: str, snippet: str, pred: str, f1: float) -> dict:
    convs = [step(f"I need to search {query}.", f"search[{query}]"), obs(" " + snippet),
             step(f"The answer is {pred}.", f"finish[{pred}]"), END]
    return {"conversations": convs,
            "info": {"reward": False, "em": False, "f1": f1, "gt": a, "pred": pred},
            "id": qid(q), "source": TEMPS[(i + k) % 3]}


def write_hotpotqa() -> None:
    pos = [hotpot_positive(i, q, a, query, snip) for i, (q, a, query, snip, _) in enumerate(HOTPOT)]
    neg = [hotpot_negative(i, k, q, a, query, snip, pred, f1)
           for i, (q, a, query, snip, negs) in enumerate(HOTPOT) for k, (pred, f1) in enumerate(negs)]
    (HERE / "hotpotqa_positive.json").write_text(json.dumps(pos, indent=1, ensure_ascii=False) + "\n")
    (HERE / "hotpotqa_negative.json").write_text(json.dumps(neg, indent=1, ensure_ascii=False) + "\n")
    with open(HERE / "hotpotqa_questions.jsonl", "w") as f:
        for q, a, *_ in HOTPOT:
            f.write(json.dumps({"id": qid(q), "question": q, "answer": a}) + "\n")


if __name__ == "__main__":
    write_strategyqa()
    write_hotpotqa()
