"""Text corpora for the local speech engine.

- :func:`generic_phone_sentences`: what callers say on any phone line, whatever the business — numbers,
  digit strings, ordinals, dates, weekdays, times, yes/no, courtesy phrases, names, spelled letters. The
  recogniser adds it to every flow's own phrases before building the language model (see ``lm.py``).
- :data:`SAMPLE_CALLER_LINES`: ~30 caller lines for a dental clinic and a restaurant, the test set of the
  speech benchmark and tests.
- :data:`DEMO_FLOW_PHRASES`: what a dental-clinic and a restaurant flow would contribute to the language
  model. They are close to the sample lines but deliberately not the same sentences, so accuracy measured
  with them is not inflated by having the answers in the model.
"""

from __future__ import annotations

import random
from functools import cache

__all__ = [
    "DEMO_FLOW_PHRASES",
    "FIRST_NAMES",
    "LAST_NAMES",
    "SAMPLE_CALLER_LINES",
    "generic_phone_sentences",
]

SAMPLE_CALLER_LINES: tuple[str, ...] = (
    # dental clinic
    "I'd like to book a cleaning",
    "Tuesday at ten thirty please",
    "my name is Maria Lopez",
    "yes that's right",
    "do you have anything on Friday morning",
    "I need to cancel my appointment",
    "can I move it to next Wednesday",
    "I have a toothache and it really hurts",
    "my date of birth is March fourth nineteen eighty five",
    "my phone number is five five five one two three four",
    "the afternoon works better for me",
    "is 2:15 available",
    "no that's wrong",
    "can I speak to a person",
    "what are your opening hours",
    "do you take my insurance",
    # restaurant
    "a table for four tomorrow at seven",
    "do you have the tiramisu",
    "I'd like to make a reservation for Saturday night",
    "two people at eight thirty",
    "do you have vegetarian options",
    "can we sit outside",
    "it's for a birthday",
    "I want to order a large pizza for delivery",
    "how late are you open tonight",
    "my name is John Smith",
    "the 21st of June",
    "half past six please",
    "sorry could you repeat that",
    "no thanks goodbye",
    "thank you very much",
)

DEMO_FLOW_PHRASES: tuple[str, ...] = (
    # dental clinic
    "I would like to book a cleaning",
    "I'd like to book a checkup",
    "I want to schedule a cleaning",
    "I need an appointment for a filling",
    "book an appointment with the hygienist",
    "a cleaning and a checkup",
    "Monday at nine thirty",
    "Thursday at eleven please",
    "Tuesday morning please",
    "do you have anything on Thursday afternoon",
    "anything on Friday",
    "do you have anything earlier",
    "I want to cancel my appointment",
    "I need to reschedule my appointment",
    "can I move my appointment to Monday",
    "move it to next week",
    "I have a toothache",
    "my tooth really hurts",
    "it hurts when I eat",
    "I think I lost a filling",
    "my date of birth is",
    "I was born on the second of May",
    "my phone number is",
    "my number is",
    "the morning works better",
    "the afternoon is better for me",
    "is three o'clock available",
    "is that time available",
    "that's wrong",
    "no that's not right",
    "I want to speak to a person",
    "can I talk to someone",
    "what time do you open",
    "what are your hours",
    "are you open on Saturday",
    "do you accept insurance",
    "do you take Delta Dental",
    "is it an emergency",
    # restaurant
    "a table for two tonight at eight",
    "a table for six on Friday",
    "I'd like a table for four",
    "a reservation for tomorrow at seven thirty",
    "I'd like to book a table",
    "can I make a reservation",
    "reservation for Saturday",
    "do you have the lasagna",
    "I'd like the tiramisu",
    "what desserts do you have",
    "do you have any desserts",
    "we are two people",
    "three people at seven",
    "four people on Sunday night",
    "any vegetarian dishes",
    "do you have gluten free options",
    "vegan options",
    "can we sit on the terrace",
    "is there outdoor seating",
    "it's for an anniversary",
    "we are celebrating a birthday",
    "I'd like to order a pizza",
    "a large pizza please",
    "a small pizza and a salad",
    "delivery please",
    "for pick up",
    "how late are you open",
    "are you open tonight",
    "when do you close",
    "the menu please",
)

FIRST_NAMES: tuple[str, ...] = (
    "james", "john", "robert", "michael", "william", "david", "richard", "joseph", "thomas", "charles",
    "daniel", "matthew", "anthony", "mark", "paul", "steven", "andrew", "kevin", "brian", "george",
    "jose", "carlos", "luis", "juan", "peter", "sam", "mary", "patricia", "jennifer", "linda",
    "elizabeth", "barbara", "susan", "jessica", "sarah", "karen", "nancy", "lisa", "maria", "anna",
    "emma", "olivia", "sophia", "laura", "emily", "michelle", "amanda", "melissa", "rachel", "kate",
)  # fmt: skip

LAST_NAMES: tuple[str, ...] = (
    "smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis", "rodriguez", "martinez",
    "hernandez", "lopez", "gonzalez", "wilson", "anderson", "thomas", "taylor", "moore", "jackson", "martin",
    "lee", "perez", "thompson", "white", "harris", "sanchez", "clark", "ramirez", "lewis", "robinson",
    "walker", "young", "allen", "king", "wright", "scott", "torres", "nguyen", "hill", "flores",
    "green", "adams", "nelson", "baker", "hall", "rivera", "campbell", "mitchell", "carter", "roberts",
)  # fmt: skip

_UNITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEENS = (
    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen",
)  # fmt: skip
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ORDINAL_UNITS = (
    "", "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
    "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
    "eighteenth", "nineteenth",
)  # fmt: skip
_ORDINAL_TENS = {20: "twentieth", 30: "thirtieth"}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = (
    "january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december",
)  # fmt: skip
_HOURS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")


def _cardinal(n: int) -> str:
    """0..99 in words (the corpus only needs these; lm.normalize_words handles larger numbers)."""
    if n < 10:
        return _UNITS[n]
    if n < 20:
        return _TEENS[n - 10]
    tens, unit = divmod(n, 10)
    return _TENS[tens] + (f" {_UNITS[unit]}" if unit else "")


def _ordinal(n: int) -> str:
    """1..31 as an ordinal in words."""
    if n < 20:
        return _ORDINAL_UNITS[n]
    tens, unit = divmod(n, 10)
    return _ORDINAL_TENS[tens * 10] if unit == 0 else f"{_TENS[tens]} {_ORDINAL_UNITS[unit]}"


def _numbers() -> list[str]:
    out = [_cardinal(n) for n in range(100)] + ["one hundred", "a hundred", "oh"]
    out += [f"{_cardinal(n)} people" for n in range(1, 13)]
    out += [f"for {_cardinal(n)}" for n in range(1, 13)]
    rng = random.Random(4)  # digit strings: phone numbers, dates of birth, codes (fixed seed: stable LM)
    for length in (3, 4, 4, 7, 7, 7, 10, 10):
        for _ in range(6):
            out.append(" ".join(_UNITS[rng.randrange(10)] for _ in range(length)))
    out += [f"my number is {' '.join(_UNITS[rng.randrange(10)] for _ in range(7))}" for _ in range(4)]
    return out


def _dates() -> list[str]:
    out = ["today", "tomorrow", "the day after tomorrow", "yesterday", "next week", "this week", "tonight"]
    out += ["this morning", "this afternoon", "this evening", "tomorrow morning", "tomorrow afternoon"]
    out += ["in the morning", "in the afternoon", "in the evening", "at night", "any day", "any time"]
    for day in WEEKDAYS:
        out += [day, f"on {day}", f"next {day}", f"this {day}", f"{day} morning", f"{day} afternoon"]
        out += [f"{day} evening", f"{day} night"]
    for n in range(1, 32):
        out += [f"the {_ordinal(n)}", f"on the {_ordinal(n)}"]
    for i, month in enumerate(MONTHS):
        out += [month, f"in {month}"]
        for n in (1 + i % 7, 8 + i % 9, 17 + i % 12, 26 + i % 5):  # a spread of days, not all 31 x 12
            out += [f"{month} {_ordinal(n)}", f"the {_ordinal(n)} of {month}"]
    for year in range(1930, 2011, 3):  # dates of birth
        rest = year % 100
        if year >= 2000:
            out.append("two thousand" + (f" {_cardinal(rest)}" if rest else ""))
        else:
            out.append(
                "nineteen " + ("hundred" if rest == 0 else ("oh " if rest < 10 else "") + _cardinal(rest))
            )
    return out


def _times() -> list[str]:
    out = ["noon", "midnight", "at noon", "lunch time", "after work", "early", "later", "as soon as possible"]
    for i, hour in enumerate(_HOURS):
        out += [hour, f"at {hour}", f"{hour} o'clock", f"at {hour} o'clock", f"{hour} a.m.", f"{hour} p.m."]
        out += [f"{hour} thirty", f"{hour} fifteen", f"{hour} forty five", f"half past {hour}"]
        out += [f"quarter past {hour}", f"quarter to {hour}", f"around {hour}", f"{hour} in the morning"]
        out += [f"{hour} {_cardinal(10 + 5 * (i % 8))}", f"{hour} oh five"]
    return out


def _answers() -> list[str]:
    return [
        "yes", "yes please", "yeah", "yep", "sure", "of course", "okay", "ok", "alright", "correct",
        "that's right", "that's correct", "yes that's correct", "exactly", "perfect", "sounds good",
        "that works", "that's fine", "great", "no", "nope", "no thanks", "no thank you", "not really",
        "that's not right", "that's wrong", "no that's not it", "wrong", "i don't know", "i'm not sure",
        "maybe", "hello", "hi", "hi there", "good morning", "good afternoon", "thank you", "thanks",
        "thanks a lot", "thank you so much", "goodbye", "bye", "bye bye", "have a nice day", "you too",
        "please", "sorry", "excuse me", "pardon", "what", "repeat that", "can you repeat that",
        "could you repeat that please", "say that again", "one more time", "wait", "hold on", "just a moment",
        "speak to a person", "talk to a person", "i want to talk to a human", "operator", "representative",
        "a real person please", "can i speak to someone", "i have a question", "that's all", "nothing else",
        "that's it", "i'm done", "never mind", "start over", "go back", "help", "i need help",
        "i'd like to", "i want to", "i need to", "can i", "could i", "do you have", "is there", "what about",
        "how about", "how much is it", "how much does it cost", "where are you located", "what's the address",
        "my name is", "this is", "it's", "i'm calling about", "i'm calling to", "i called earlier",
        "my email is", "my phone number is", "my date of birth is", "my address is", "spelled",
        "i said", "i meant",
    ]  # fmt: skip


def _names() -> list[str]:
    out: list[str] = []
    for i, first in enumerate(FIRST_NAMES):
        last = LAST_NAMES[(i * 7 + 3) % len(LAST_NAMES)]  # one pairing each, not the cross product
        out += [f"my name is {first}", f"this is {first}", f"{first} {last}", f"it's {last}", last]
    return out


def _letters() -> list[str]:
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    out = list(letters) + [f"{c} as in" for c in letters]
    out += [" ".join(name) for name in LAST_NAMES[::5]]  # spelled surnames, e.g. "s m i t h"
    return out


@cache
def generic_phone_sentences() -> tuple[str, ...]:
    """The built-in generic phone-domain corpus, lowercase words, one phrase per entry (deterministic)."""
    return tuple(_numbers() + _dates() + _times() + _answers() + _names() + _letters())
