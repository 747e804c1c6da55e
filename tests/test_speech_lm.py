"""Language-model building (ARPA), text normalisation and word error rate."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pocketsphinx
import pytest

from ivr.speech.corpus import DEMO_FLOW_PHRASES, SAMPLE_CALLER_LINES, generic_phone_sentences
from ivr.speech.lm import (
    build_arpa,
    compound_pronunciation,
    dictionary_text,
    dictionary_words,
    normalize_words,
    number_words,
    ordinal_words,
    unknown_words,
)
from ivr.speech.wer import word_accuracy, word_errors

Gram = tuple[str, ...]


def parse_arpa(text: str) -> tuple[dict[int, int], dict[Gram, tuple[float, float]]]:
    """Header counts and {ngram: (log10 prob, log10 backoff)} of an ARPA file."""
    header: dict[int, int] = {}
    grams: dict[Gram, tuple[float, float]] = {}
    section = 0
    for line in text.splitlines():
        if m := re.fullmatch(r"ngram (\d+)=(\d+)", line):
            header[int(m[1])] = int(m[2])
        elif m := re.fullmatch(r"\\(\d+)-grams:", line):
            section = int(m[1])
        elif line.startswith("\\") or not line.strip():
            continue
        elif section:
            fields = line.split("\t")
            gram = tuple(fields[1].split())
            assert len(gram) == section, line
            grams[gram] = (float(fields[0]), float(fields[2]) if len(fields) > 2 else 0.0)
    return header, grams


def backoff_prob(grams: dict[Gram, tuple[float, float]], context: Gram, word: str) -> float:
    """P(word | context) by the ARPA back-off rule."""
    if (*context, word) in grams:
        return 10 ** grams[(*context, word)][0]
    if not context:
        return 0.0
    bow = 10 ** grams[context][1] if context in grams else 1.0
    return bow * backoff_prob(grams, context[1:], word)


SENTENCES = [
    "I'd like to book a cleaning",
    "I'd like to book a table",
    "a table for four",
    "book a table for two tomorrow",
    "yes please",
    "no thanks",
    "yes",
]


def test_header_counts_match_sections() -> None:
    header, grams = parse_arpa(build_arpa(SENTENCES, order=3))
    counted = {k: sum(1 for g in grams if len(g) == k) for k in (1, 2, 3)}
    assert header == counted
    assert header[1] == len({w for s in SENTENCES for w in normalize_words(s)}) + 2  # + <s>, </s>
    assert ("<s>", "i'd", "like") in grams and ("table", "for", "four") in grams


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_sums_to_one(order: int) -> None:
    _, grams = parse_arpa(build_arpa(SENTENCES, order=order))
    vocab = [g[0] for g in grams if len(g) == 1 and g[0] != "<s>"]
    assert math.isclose(sum(backoff_prob(grams, (), w) for w in vocab), 1.0, rel_tol=1e-5)
    contexts = {g[:-1] for g in grams if len(g) > 1}
    assert len(contexts) > 5 or order == 1
    for context in contexts:
        total = sum(backoff_prob(grams, context, w) for w in vocab)
        assert math.isclose(total, 1.0, rel_tol=1e-4), (context, total)


def test_seen_continuations_beat_unseen() -> None:
    _, grams = parse_arpa(build_arpa(SENTENCES))
    assert backoff_prob(grams, ("a", "table"), "for") > backoff_prob(grams, ("a", "table"), "cleaning")
    assert backoff_prob(grams, ("<s>",), "yes") > backoff_prob(grams, ("<s>",), "four")
    assert grams[("<s>",)][0] == -99.0


def test_pocketsphinx_loads_the_model(tmp_path: Path) -> None:
    corpus = [*generic_phone_sentences(), *DEMO_FLOW_PHRASES]
    path, words = tmp_path / "flow.arpa", tmp_path / "flow.dict"
    path.write_text(build_arpa(corpus, known_words=dictionary_words()), encoding="utf-8")
    words.write_text(dictionary_text({w for s in corpus for w in normalize_words(s)}), encoding="utf-8")
    decoder = pocketsphinx.Decoder(lm=str(path), dict=str(words), loglevel="FATAL")
    lm = decoder.get_lm(decoder.current_search())
    assert lm.prob(["tiramisu"]) > lm.prob(["zzzz-not-a-word"])


def test_words_missing_from_the_dictionary_are_dropped_and_reported() -> None:
    known = dictionary_words()
    sentences = ["my name is Xochiqzetl Brown", "yes"]
    assert unknown_words(sentences, known) == {"xochiqzetl"}
    header, grams = parse_arpa(build_arpa(sentences, known_words=known))
    assert ("xochiqzetl",) not in grams
    assert ("is", "brown") in grams  # the sentence is kept without the unknown word
    assert header[1] == 7


def test_compound_words_get_a_pronunciation() -> None:
    assert "toothache" not in dictionary_words()
    assert compound_pronunciation("toothache") == "T UW TH EY K"
    assert compound_pronunciation("qqqzzz") is None


def test_no_words_is_an_error() -> None:
    with pytest.raises(ValueError, match="no words"):
        build_arpa(["", "!!!"])
    with pytest.raises(ValueError, match="order"):
        build_arpa(["yes"], order=0)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("10", ["ten"]),
        ("2:30", ["two", "thirty"]),
        ("2:05 pm", ["two", "oh", "five", "p.m."]),
        ("at 3pm", ["at", "three", "p.m."]),
        ("I am here", ["i", "am", "here"]),
        ("4th", ["fourth"]),
        ("the 21st of June", ["the", "twenty", "first", "of", "june"]),
        ("30th", ["thirtieth"]),
        ("That's right, isn't it?", ["that's", "right", "isn't", "it"]),
        ("'Quoted' words", ["quoted", "words"]),
        ("1,250 people", ["one", "thousand", "two", "hundred", "fifty", "people"]),
        ("$5", ["five", "dollars"]),
        ("José", ["jose"]),
        ("twenty-one", ["twenty", "one"]),
    ],
)
def test_normalize_words(text: str, words: list[str]) -> None:
    assert normalize_words(text) == words


def test_number_and_ordinal_words() -> None:
    assert number_words(0) == ["zero"]
    assert number_words(115) == ["one", "hundred", "fifteen"]
    assert number_words(2_000_019) == ["two", "million", "nineteen"]
    assert ordinal_words(12) == ["twelfth"]
    assert ordinal_words(22) == ["twenty", "second"]


def test_corpora_are_in_the_dictionary() -> None:
    known = dictionary_words()
    assert unknown_words(generic_phone_sentences(), known) == set()
    assert unknown_words(SAMPLE_CALLER_LINES, known) == {"toothache"}  # pronounced as a compound


def test_word_errors() -> None:
    errors = word_errors("a table for four tomorrow", "the table for for tomorrow at")
    assert (errors.substitutions, errors.deletions, errors.insertions) == (2, 0, 1)
    assert errors.reference_words == 5
    assert errors.wer == pytest.approx(0.6)
    assert word_errors("the 21st", "the twenty first").errors == 0
    assert word_errors("yes please", "").deletions == 2
    assert word_accuracy([("yes please", "yes please"), ("no thanks", "no")]) == pytest.approx(0.75)


def test_dictionary_text_lists_every_pronunciation() -> None:
    text = dictionary_text(["read", "toothache", "qqqzzz"])
    assert text.splitlines() == ["read R EH D", "read(2) R IY D", "toothache T UW TH EY K"]
