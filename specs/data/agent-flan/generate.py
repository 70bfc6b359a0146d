"""Writes the synthetic Agent-FLAN-style sample data in this directory (run: python generate.py).

Agent-FLAN's data (internlm/Agent-FLAN on the Hugging Face hub) cannot be fetched here, so these
rows are written from scratch in its record shape — `{"conversation": [{role, content, loss}],
"id"}` — in the ToolBench/AgentInstruct ReAct style (`Thought: …\\nAction: name\\nAction Input:
{json}` and `Observation: …` turns, tools and format instructions in the system prompt), plus
ordinary chat rows (ShareGPT-like) and a pool of tools for the irrelevant-tools negatives.
"""
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

TOOLS = [
    {"name": "get_weather", "description": "Get the current weather in a city.",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "search_movies", "description": "Search movies by title or keyword.",
     "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}},
    {"name": "convert_currency", "description": "Convert an amount between currencies.",
     "parameters": {"type": "object",
                    "properties": {"amount": {"type": "number"}, "from": {"type": "string"}, "to": {"type": "string"}},
                    "required": ["amount", "from", "to"]}},
    {"name": "calculator", "description": "Evaluate an arithmetic expression.",
     "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}},
    {"name": "finish", "description": "Give the final answer to the user.",
     "parameters": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}},
]

POOL = [
    {"name": "get_stock_price", "description": "Get the latest price of a stock ticker.",
     "parameters": {"type": "object", "properties": {"ticker": {"type": "string"}}, "required": ["ticker"]}},
    {"name": "send_email", "description": "Send an email.",
     "parameters": {"type": "object", "properties": {"to": {"type": "string"}, "body": {"type": "string"}},
                    "required": ["to", "body"]}},
    {"name": "translate", "description": "Translate text into another language.",
     "parameters": {"type": "object", "properties": {"text": {"type": "string"}, "target": {"type": "string"}},
                    "required": ["text", "target"]}},
    {"name": "get_news", "description": "Get today's headlines on a topic.",
     "parameters": {"type": "object", "properties": {"topic": {"type": "string"}}, "required": ["topic"]}},
    {"name": "book_table", "description": "Book a restaurant table.",
     "parameters": {"type": "object", "properties": {"restaurant": {"type": "string"}, "time": {"type": "string"}},
                    "required": ["restaurant", "time"]}},
    {"name": "get_movie_details", "description": "Get details about a movie.",
     "parameters": {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}},
]

SYSTEM = ("You are AgentLM, a helpful assistant that can use tools.\n\n"
          "Tools:\n" + "\n".join(f"- {t['name']}: {t['description']} Input: {json.dumps(t['parameters']['properties'])}"
                                 for t in TOOLS)
          + "\n\nUse the following format:\nThought: think about what to do\nAction: the tool to use, one of "
          + ", ".join(t["name"] for t in TOOLS)
          + "\nAction Input: the input to the tool, as a JSON object\nObservation: the result of the tool\n"
            "... (Thought/Action/Action Input/Observation can repeat)\n"
            "Finish with Action: finish and Action Input: {\"answer\": \"your final answer\"}.")


def msg(role, content):
    return {"role": role, "content": content, "loss": role == "assistant"}


def act(thought, name, args):
    return msg("assistant", f"Thought: {thought}\nAction: {name}\nAction Input: {json.dumps(args, ensure_ascii=False)}")


def obs(text):
    return msg("user", f"Observation: {text}")


# (query, [(thought, tool, args, observation)], final thought, answer)
TOOL_TASKS = [
    ("What's the weather like in Paris right now?",
     [("I need the current weather in Paris.", "get_weather", {"city": "Paris"}, '{"temp_c": 18, "sky": "cloudy"}')],
     "The weather tool says it is 18 C and cloudy.", "It is 18 °C and cloudy in Paris."),
    ("Is it warmer in Rome or in Oslo today?",
     [("I will check Rome first.", "get_weather", {"city": "Rome"}, '{"temp_c": 24, "sky": "sunny"}'),
      ("Now Oslo.", "get_weather", {"city": "Oslo"}, '{"temp_c": 9, "sky": "rain"}')],
     "Rome is 24 C and Oslo 9 C.", "Rome is warmer: 24 °C against 9 °C in Oslo."),
    ("Find me a movie about space exploration.",
     [("I should search movies about space exploration.", "search_movies", {"query": "space exploration"},
       '[{"title": "Interstellar", "year": 2014}, {"title": "The Martian", "year": 2015}]')],
     "Two good matches came back.", "Try Interstellar (2014) or The Martian (2015)."),
    ("How much is 250 US dollars in euros?",
     [("I need a currency conversion.", "convert_currency", {"amount": 250, "from": "USD", "to": "EUR"},
       '{"result": 231.5}')],
     "The conversion gives 231.5 EUR.", "250 USD is about 231.50 EUR."),
    ("What is 17 times 23 plus 4?",
     [("I will use the calculator.", "calculator", {"expression": "17*23+4"}, "395")],
     "The calculator returned 395.", "17 × 23 + 4 = 395."),
    ("Who directed the movie Inception?",
     [("Let me search for Inception.", "search_movies", {"query": "Inception"},
       '[{"title": "Inception", "year": 2010, "director": "Christopher Nolan"}]')],
     "The result lists the director.", "Inception was directed by Christopher Nolan."),
    ("Should I take an umbrella in London today?",
     [("I need London's weather.", "get_weather", {"city": "London"}, '{"temp_c": 13, "sky": "light rain"}')],
     "Light rain is expected.", "Yes — light rain is expected in London today."),
    ("Convert 100 euros to Japanese yen, then tell me how many yen that is per euro.",
     [("First the conversion.", "convert_currency", {"amount": 100, "from": "EUR", "to": "JPY"}, '{"result": 16250}'),
      ("Now divide by 100.", "calculator", {"expression": "16250/100"}, "162.5")],
     "So one euro is 162.5 yen.", "100 EUR is 16,250 JPY, i.e. 162.5 yen per euro."),
    ("Find a comedy movie from the 1990s.",
     [("I'll search for 1990s comedies.", "search_movies", {"query": "1990s comedy"},
       '[{"title": "Groundhog Day", "year": 1993}]')],
     "Groundhog Day fits.", "Groundhog Day (1993) is a classic 1990s comedy."),
    ("What is the weather in Tokyo and what is 30 degrees Celsius in Fahrenheit?",
     [("Tokyo weather first.", "get_weather", {"city": "Tokyo"}, '{"temp_c": 30, "sky": "clear"}'),
      ("Convert 30 C to F.", "calculator", {"expression": "30*9/5+32"}, "86")],
     "It is 30 C, which is 86 F.", "Tokyo is clear at 30 °C, which is 86 °F."),
    ("How many British pounds do I get for 80 Swiss francs?",
     [("A currency conversion will do.", "convert_currency", {"amount": 80, "from": "CHF", "to": "GBP"},
       '{"result": 71.2}')],
     "That is 71.2 GBP.", "80 CHF is about 71.20 GBP."),
    ("Search for movies starring a talking dog.",
     [("Let me search.", "search_movies", {"query": "talking dog"}, "[]"),
      ("Nothing came back; I'll try different words.", "search_movies", {"query": "dog that talks"},
       '[{"title": "Look Who\'s Talking Now", "year": 1993}]')],
     "The second search found one.", "Look Who's Talking Now (1993) features talking dogs."),
]

# Questions answered without a tool (the reasoning turns of the mix).
DIRECT = [
    ("What is the capital of Australia?", "I know this without a tool.", "The capital of Australia is Canberra."),
    ("Is 91 a prime number?", "91 = 7 × 13, so it is not prime.", "No, 91 is not prime: it is 7 × 13."),
    ("Which is heavier, a kilogram of feathers or a kilogram of iron?", "Both weigh one kilogram.",
     "Neither: both weigh one kilogram."),
    ("How many minutes are in a day?", "24 × 60 = 1440.", "There are 1,440 minutes in a day."),
]

CHAT = [
    ("Write a haiku about autumn.", "Crimson leaves drifting,\ncool wind hums through empty boughs —\nthe year exhales slow."),
    ("Give me three tips for better sleep.", "1. Keep a regular schedule.\n2. Avoid screens an hour before bed.\n3. Keep your bedroom cool and dark."),
    ("What does 'carpe diem' mean?", "It is Latin for \"seize the day\": make the most of the present."),
    ("Suggest a name for a grey kitten.", "How about Smokey, Ash or Pebble?"),
    ("Explain photosynthesis in one sentence.", "Plants use sunlight to turn water and carbon dioxide into sugar and oxygen."),
    ("Translate 'good morning' into Spanish.", "\"Good morning\" in Spanish is \"buenos días\"."),
    ("Tell me a fun fact about octopuses.", "Octopuses have three hearts and blue blood."),
    ("How do I boil an egg?", "Put the egg in boiling water for 7–9 minutes, then cool it in cold water."),
    ("What rhymes with 'light'?", "Bright, night, kite, sight and flight all rhyme with light."),
    ("Summarise the plot of Cinderella in one line.", "A mistreated young woman wins a prince's heart with help from her fairy godmother."),
]


def write() -> None:
    rows = []
    for i, (q, steps, final_thought, answer) in enumerate(TOOL_TASKS):
        conv = [msg("system", SYSTEM), msg("user", q)]
        for thought, tool, args, result in steps:
            conv += [act(thought, tool, args), obs(result)]
        conv.append(act(final_thought, "finish", {"answer": answer}))
        rows.append({"conversation": conv, "id": f"toolbench_{i}"})
    for i, (q, thought, answer) in enumerate(DIRECT):
        conv = [msg("system", SYSTEM), msg("user", q), act(thought, "finish", {"answer": answer})]
        rows.append({"conversation": conv, "id": f"toolbench_direct_{i}"})
    with open(HERE / "toolbench_react.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(HERE / "chat.jsonl", "w") as f:
        for i, (q, a) in enumerate(CHAT):
            f.write(json.dumps({"conversation": [msg("user", q), msg("assistant", a)], "id": f"chat_{i}"},
                               ensure_ascii=False) + "\n")
    (HERE / "tools.json").write_text(json.dumps(TOOLS, indent=1) + "\n")
    (HERE / "tool_pool.json").write_text(json.dumps(POOL, indent=1) + "\n")


if __name__ == "__main__":
    write()
