"""Thresholds, deduplication, query sampling and DPO pairing."""

import ast
import re
import unicodedata
from collections.abc import Iterable, Sequence
from difflib import get_close_matches
from functools import cache, lru_cache
from itertools import product

from ..schemas import stable_hash
from ..sandbox.protocol import Verdict


def dedupe_key(text: str) -> str:
    """Instructions equal up to case, spacing and final punctuation are one instruction."""
    return " ".join(text.casefold().split()).rstrip(".!;")


def pass_rate(verdicts: Sequence[Verdict]) -> tuple[int, int, float]:
    """(passed, errors, rate) of one response under all of its instruction's verifiers.

    An error (timeout, exception...) counts as not passing: a verifier that cannot judge a
    response must not make it look compliant."""
    passed = sum(v.passed for v in verdicts)
    errors = sum(v.is_error for v in verdicts)
    return passed, errors, passed / len(verdicts) if verdicts else 0.0


_WORD = re.compile(r"[^\W_]+")


def _stem(word: str) -> str:
    """A plural's singular, crudely ("fees" -> "fee"): enough that an answer does not look new
    for saying "types" where its query said "type"."""
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


# A hashtag runs its words together ("#StagesOfEPCProject"): split at each capital that starts a word
_HASHTAG = re.compile(r"#\w+")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _words(text: str) -> list[str]:
    text = _HASHTAG.sub(lambda m: _CAMEL.sub(" ", m.group()), text)
    return [_stem(w) for w in _WORD.findall(text.casefold())]


def _misspelt(word: str, given: list[str]) -> bool:
    """One of `given` with a letter or two wrong ("dumbell" for "dumbbell"): ShareGPT queries are
    typed fast, and an answer that spells the query right says nothing new by it."""
    return len(word) >= 5 and bool(get_close_matches(word, given, n=1, cutoff=0.85))


def _derived(word: str, given: list[str]) -> bool:
    """One of `given` with an ending of up to four letters added or taken off ("homeless" for
    "homelessness"), both five letters or more."""
    return len(word) >= 5 and any(len(g) >= 5 and abs(len(g) - len(word)) <= 4
                                  and (g.startswith(word) or word.startswith(g)) for g in given)


def _joined(word: str, given: set[str]) -> bool:
    """Two or more of `given` run together ("funnynameforrecleaguebasketballteam")."""
    ends = {0}  # where a split of word[:i] into given words can end
    for i in range(1, len(word) + 1):
        if any(word[j:i] in given for j in ends if i - j >= 2):
            ends.add(i)
    return len(word) in ends and word not in given


def _said(word: str, given: set[str], spellings: list[str]) -> bool:
    """The word is the query's or instruction's own, however spelt, derived or run together."""
    return word in given or _misspelt(word, spellings) or _derived(word, spellings) or _joined(word, given)


def restates_the_query(response: str, query: str, instruction: str, new_share_max: float = 0.2) -> bool:
    """An answer made of the query's own words (and the instruction's, such as an end phrase it
    asks for): at most `new_share_max` of its words are in neither. The quality judge scored
    such answers 8 of 9 ("Since the interpreter had the same experience, he offered to help me?");
    without the plurals folded, "Student fees and fee types are related to pricing." passed as an
    answer to "...student fee and fee type. Each fee type could be related to a pricing.", and
    without hashtags split "#StagesOfEPCProject #EnergyAndChemicalsIndustry" passed as an answer
    to "What are the stages of an EPC project in the energy and chemicals industry?" (6.96), and
    without endings and run-together words "HOMELESS AND POTENTIAL SOLUTIONS" to "Tell me about
    homelessness and potential solutions" (6.92), "funnynameforrecleaguebasketballteam" (6.88).
    Endings and joins flag 5 more of the 797 answers of three rounds, each restating its query,
    and no labelled answer."""
    words = _words(response)
    given = set(_words(query) + _words(instruction))
    spellings = sorted(given)
    new, most = 0, new_share_max * len(words)
    for word in words:
        new += not _said(word, given, spellings)
        if new > most:  # a real answer stops here after a few words
            return False
    return bool(words)


_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")


def asks_back(response: str) -> bool:
    """The whole answer is one question: the query asked again, in its words or in another
    language ("¿Cómo se relaciona la combinación de harina de garbanzo con las alergias
    alimentarias?" to "coneccion entre harina de garbanzo y alrgias alimentarias", 6.83), or a
    question back to the user. On the 90 labelled answers it flags 5 non-answers and no answer."""
    text = response.strip()
    return text.endswith("?") and _one_sentence(text)


def _one_sentence(text: str) -> bool:
    """One line with at most one sentence end."""
    return "\n" not in text and len(_SENTENCE_END.findall(text)) <= 1


@cache
def _pos_tag():
    from .. import nltk_data

    nltk_data.ensure()  # NLTK's tagger, built at install from a PyPI wheel (never downloaded)
    from nltk import pos_tag

    return pos_tag


_FINITE_VERB = {"VB", "VBD", "VBP", "VBZ", "MD"}
_TOKEN = re.compile(r"\w+|[^\w\s]")


def is_title(response: str) -> bool:
    """One short line that states nothing: no closing mark and no finite verb ("CHROMOSOME
    ATTACHMENT SITE OF SPECIALIZED KINETOCHORE PROTEINS"; not "Megan worked 20 hours"). Tagged
    lower-cased: in capitals every word reads as a proper noun."""
    text = response.strip().strip("*#").strip()
    if not text or "\n" in text or text.endswith((".", "!", "?")) or len(text.split()) > 12:
        return False
    return not any(tag in _FINITE_VERB for _, tag in _pos_tag()(_TOKEN.findall(text.lower())))


# A query that asks for a name, a title or a list is answered by a title
_ASKS_FOR_A_TITLE = re.compile(r"\b(?:names?|titles?|slogans?|taglines?|headlines?|ideas?|list)\b", re.IGNORECASE)


def not_an_answer(response: str, query: str, instruction: str) -> str | None:
    """Why a response that passes its verifiers still does not answer its query, if it does not
    (it restates the query, as words or as a title; it announces an answer it never gives; it
    asks a question back).
    A title made mostly of the query's words restates it too (`restates_as_a_title`: at most 45%
    new words, where a sentence may have 20%): "PLANNING MY AFTERNOON" to "Help me plan my
    afternoon", "CHROMOSOME ATTACHMENT SITE OF SPECIALIZED KINETOCHORE PROTEINS" to "Where do
    specialized kinetochore proteins attach to chromosomes?" (6.90-7.03, round 2026-11-27). Of
    the 1,077 answers of four rounds it flags 6 more, each such a title, and no labelled answer."""
    if restates_the_query(response, query, instruction):
        return "restates_the_query"
    if (is_title(response) and not _ASKS_FOR_A_TITLE.search(query)
            and restates_the_query(response, query, instruction, new_share_max=0.45)):
        return "restates_as_a_title"
    if one_sentence_for_a_piece(response, query, instruction):
        return "one_sentence_for_a_piece"
    if announces_only(response):
        return "announces_an_answer"
    return "asks_a_question" if asks_back(response) else None


# A request for a piece of writing ("write me an essay on...", "can you re-write a modern version
# of the tell tale heart"); "how to write a blog intro" asks how, and code may take one line.
_ASKS_FOR_A_PIECE = re.compile(
    r"(?<!\bhow to )\b(?:write|re-?write|compose|draft|create)\b(?:\W+\w+){0,8}?\W+"
    r"(?:stor(?:y|ies)|essays?|articles?|patents?|letters?|e-?mails?|blog|speech|songs?|poems?|lyrics|reports?"
    r"|chapters?|scenes?|novel|version)\b",
    re.IGNORECASE)


def one_sentence_for_a_piece(response: str, query: str, instruction: str) -> bool:
    """Asked for a piece of writing, the answer is one sentence: it describes the piece ("A modern
    version of the tell tale heart where the heart is a cellphone, showcasing...", 7.05, round
    2026-11-09; "The essay should address whether equality is good or bad..."), titles it or
    declines it instead of writing it. Unless the query or the instruction counts words or
    sentences ("Limit the length of the answer to 5 words or fewer"). Of the 2,188 answers of
    eight rounds it flags 11, each such a non-answer (two "songs" of the recording: "KNOWLEDGE IS
    POWER."), and no labelled answer."""
    return (bool(_ASKS_FOR_A_PIECE.search(query)) and _one_sentence(response.strip())
            and not _COUNT.search(query) and not _COUNT.search(instruction))


_ANNOUNCES = re.compile(r"\b(?:here's|here is|here are|below is|below are)\b", re.IGNORECASE)


def announces_only(response: str) -> bool:
    """The answer is announced and never given: "Certainly! Here's a detailed explanation of
    computer networks and security in simple terms with examples." (7.26, round 2026-11-27), "Sure,
    here's how to do it with RealestateMall." One line, and after "here is" one sentence with no
    colon or code: of the 1,077 answers of four rounds it flags those two, and no labelled answer."""
    text = response.strip()
    found = _ANNOUNCES.search(text)
    if not found or "\n" in text:
        return False
    rest = text[found.end():]
    return ":" not in rest and "`" not in rest and len(_SENTENCE_END.findall(rest)) <= 1


# The units a length or scope instruction counts, by the words that name them ("letters" are
# characters). Quoted text is left out: "Include the word 'STOP'" names a word, not a count.
_UNITS = {"character": "character", "char": "character", "letter": "character", "word": "word",
          "sentence": "sentence", "line": "line", "paragraph": "paragraph"}
_UNIT = re.compile(r"\b(" + "|".join(_UNITS) + r")s?\b", re.IGNORECASE)
_QUOTED = re.compile(r"(?<!\w)'[^']*'|\"[^\"]*\"|<<[^>]*>>")  # "response's" opens no quote


def units_named(text: str) -> set[str]:
    return {_UNITS[m.lower()] for m in _UNIT.findall(_QUOTED.sub(" ", text))}


# "every sentence", "each line", "all words", "only words that start with...": a rule about each
# unit of the text, not the whole (characters are left out: "use all capital letters" is a rule
# about the whole response). "only" needs plural units and a clause that qualifies each of them:
# "only uppercase words" is as whole-response as "all capital letters", "only one line" a count.
_SCOPE = re.compile(r"\b(?:every|each|all)\s+(?:\w+\s+)?(word|sentence|line|paragraph)s?\b"
                    r"|\bonly\s+(?:\w+\s+)?(word|sentence|line|paragraph)s"
                    r"\s+(?:that|which|with|starting|beginning|ending)\b",
                    re.IGNORECASE)


def scopes_named(text: str) -> set[str]:
    return {"".join(m).lower() for m in _SCOPE.findall(_QUOTED.sub(" ", text))}


_PLURAL_UNIT = re.compile(r"\b(word|sentence|line|paragraph)s\b", re.IGNORECASE)


def scopes_kept(text: str) -> set[str]:
    """The units a back-translation still speaks of all of: with every/each/all/only, or in the
    plural ("the words end with 'ly'"); "End with the word 'ly'" speaks of one."""
    return scopes_named(text) | {m.lower() for m in _PLURAL_UNIT.findall(_QUOTED.sub(" ", text))}


# "in one sentence", "a single word", "at least 3 paragraphs": a count of units of the text
# (characters are left out: "one special character" is a kind, not a length)
_COUNT = re.compile(r"\b(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|single)\s+(?:\w+\s+)?"
                    r"(?:word|sentence|line|paragraph)s?\b", re.IGNORECASE)


# Numbers a requirement states, in digits or words ("at least two emojis", "under 40 words")
_NUMBER_WORDS = {"one": 1, "single": 1, "once": 1, "two": 2, "twice": 2, "three": 3, "thrice": 3, "four": 4,
                 "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_NUM = r"(?:\d+|" + "|".join(_NUMBER_WORDS) + r")"
_NUMBER = re.compile(rf"\b({_NUM})\b", re.IGNORECASE)


def numbers_named(text: str) -> set[int]:
    return {int(m) if m.isdigit() else _NUMBER_WORDS[m.lower()] for m in _NUMBER.findall(_QUOTED.sub(" ", text))}


# Which side of a number a requirement bounds: "under 40 words", "at least two", "exactly 3";
# negated, the side flips ("do not have more than seven words" is at most seven)
_BOUND_WORDS = {"at_most": r"under|fewer than|less than|below|at most|up to|maximum of",
                "at_least": r"at least|more than|over|above|minimum of|exceed(?:s|ing)?",
                "exactly": r"exactly|precisely"}
_BOUND = re.compile("|".join(rf"(?P<{side}>\b(?:{words})\s+{_NUM}\b)" for side, words in _BOUND_WORDS.items()),
                    re.IGNORECASE)
_NEGATED = re.compile(r"\b(?:no|not|never)\s+(?:\w+\s+)?$|n't\s+(?:\w+\s+)?$", re.IGNORECASE)
_FLIP = {"at_most": "at_least", "at_least": "at_most", "exactly": "exactly"}


# A back-translation that speaks of counting keeps a count it does not say ("Count the occurrences of 'code'")
_COUNTING = re.compile(r"\b(?:count\w*|times|occurrences?|number of|several|multiple|many)\b", re.IGNORECASE)


def bounds_named(text: str) -> set[str]:
    text = _QUOTED.sub(" ", text)
    sides = set()
    for m in _BOUND.finditer(text):
        side = m.lastgroup
        sides.add(_FLIP[side] if _NEGATED.search(text[:m.start()]) else side)
    return sides


# Where in the response an instruction puts something: "at the end", "start your answer with",
# "the last sentence". A back-translation keeps the position if it says any word of place at
# all (start/end/first/last/...), so only one that names none is taken to have dropped it.
_POSITION = re.compile(r"\bat\s+the\s+(?:very\s+)?(?:end|beginning|start|top|bottom)\b"
                       r"|\b(?:end|start|begin|finish|conclude)(?:s|ed|ing)?(?:\s+\w+){0,3}?\s+with\b"
                       r"|\b(?:first|last|final|opening|closing)\s+(?:\w+\s+)?"
                       r"(?:word|sentence|line|paragraph|letter|character)s?\b",
                       re.IGNORECASE)
_PLACE = re.compile(r"\b(?:start|begin|end|finish|conclu|first|last|final|top|bottom|prefix|suffix|lead|trail|"
                    r"append|prepend|precede|follow|after|before|open|clos)\w*", re.IGNORECASE)


def symbols_named(text: str) -> set[str]:
    """The symbols beyond ASCII a text names (emoji, arrows)."""
    return {c for c in text if ord(c) > 0x2000 and unicodedata.category(c).startswith("S")}


def texts_named(text: str) -> set[str]:
    """Text a requirement quotes (with two word characters at least: "'?'" or "'<<'" name a mark,
    which an instruction says in words), and the symbols beyond ASCII it names (emoji)."""
    quoted = {m.group()[1:-1] for m in _QUOTED.finditer(text) if not m.group().startswith("<<")}
    return {t for t in quoted if re.search(r"\w\w", t)} | symbols_named(text)


def other_requirement(instruction: str, back_translation: str) -> str | None:
    """Why a back-translation plainly states another requirement than its instruction, or None:
    - "counts_other_units": both name units of text and share none ("Answer in fewer than 40
      words" / "Keep the response under 40 characters", `len(response) < 40`);
    - "drops_the_scope": the instruction rules every word, sentence, line or paragraph (said with
      every/each/all, or "only words that...") and the back-translation speaks of none of them all,
      naming none in the plural or with every/each/all/only ("Ensure all words start with the
      letter 'a'" / "Start the response with 'a'"; "Use only words that start with a vowel" /
      "Start the response with a vowel"; "Use only words that end with 'ly'" / "End with the word 'ly'");
    - "drops_the_count": the instruction counts words, sentences, lines or paragraphs and the
      back-translation names no unit at all ("Provide your answer in one sentence" / "End the
      response with a period"; "Answer with a single word" / "The response should be exactly 'Yes'");
    - "states_other_numbers": both state numbers and share none ("Use at least two emojis" / "Include
      at least one emoji"; "Answer in at least 120 words" / "at least two words");
    - "drops_the_number": the instruction asks for two or more of something and the back-translation
      states no number and speaks of no counting ("Include the word 'programming' at least twice" /
      "Include the word 'programming' in the response"; "Use exactly two hashtags" / "Include a '#'
      character"): 8 labelled pairs, none the same requirement;
    - "bounds_the_other_side": both bound a number, on no common side ("Highlight at least two
      phrases with markdown bold" / "Use exactly two '**' characters"; "under" and "at most" are
      one side: "under 7 words" / "no more than seven words" is labelled the same requirement);
    - "drops_the_position": the instruction puts something at a place in the response (at the
      end, "start your answer with", the last sentence) and the back-translation names no place
      at all ("Include the phrase 'Yes' or 'No' at the end of your answer" / "Include the words
      'Yes' or 'No' in the response", `'Yes' in response or 'No' in response`);
    - "names_other_text": the back-translation quotes text or names an emoji the instruction does not
      ("Insert at least one emoji" / "Include 😊 or 😂"; "Start with an introductory sentence" /
      "Start the response with 'Hello, world!'"): the function checks a fixed string the
      instruction never gave. On the labelled pairs it flags 4 more, none the same; of 735 real
      pairs of earlier rounds 46, every one a wrong verifier by reading.
    The 1.5B judge called such pairs the same requirement with P(yes) 0.77-0.84; asked which unit
    an instruction counts, it answered "words" for "under 40 characters". Of 210 real pairs from
    nine rounds the first two rules flagged 45 (15 other units, 30 a dropped scope), by reading
    each a wrong verifier (one borderline: `response.istitle()` for "every word capitalized").
    With "only" and positions, of the 195 pairs of rounds 2026-11-12/11-28/12-07 they flag 56
    (was 52: three "only words that start with..." scopes, the Yes/No position), and of the 177
    labelled pairs (tests/fixtures/consistency_pairs.jsonl, benchmarks/data/consistency_heldout.jsonl)
    34 (was 33: a title "at the top" checked as `response.strip() == '<<My Title>>'`); each a
    wrong verifier by reading, none of the 68 labelled the same requirement. The count rule adds 6
    labelled pairs (none the same), one pair of those rounds and four of 2026-11-01's, each a wrong
    verifier by reading ("Answer in exactly three sentences" / "Start the response with 'I'"). The
    number rule flags 1 labelled pair (not the same) and 6 of 287 distinct pairs of six earlier homes, each a
    wrong verifier by reading; none of the recorded round's."""
    named, back = units_named(instruction), units_named(back_translation)
    if named and back and not named & back:
        return "counts_other_units"
    scope = scopes_named(instruction)
    if scope and not scope & scopes_kept(back_translation):
        return "drops_the_scope"
    if not back and _COUNT.search(_QUOTED.sub(" ", instruction)):
        return "drops_the_count"
    stated, restated = numbers_named(instruction), numbers_named(back_translation)
    if stated and restated and not stated & restated:
        return "states_other_numbers"
    if stated and max(stated) >= 2 and not restated and not _COUNTING.search(_QUOTED.sub(" ", back_translation)):
        return "drops_the_number"
    bound, rebound = bounds_named(instruction), bounds_named(back_translation)
    if bound and rebound and not bound & rebound:
        return "bounds_the_other_side"
    if _POSITION.search(_QUOTED.sub(" ", instruction)) and not _PLACE.search(_QUOTED.sub(" ", back_translation)):
        return "drops_the_position"
    said = instruction.casefold()  # a closing mark doubled in the quote ("anything else??") is the same text
    if any(text.casefold().strip().rstrip(".!?,;: ") not in said for text in texts_named(back_translation)):
        return "names_other_text"
    return None


@lru_cache(maxsize=4096)
def _syntax(func: str) -> ast.Module | None:
    """A verifier's syntax tree (None if it does not parse), read once for the rules below."""
    try:
        return ast.parse(func)
    except SyntaxError:
        return None


def repeats_a_check(func: str) -> bool:
    """The function joins a condition to itself with and/or: `'python' in response and 'python' in
    response` for "at least twice" (the issue's example), three `'*' in response` for "exactly three
    asterisks" (2026-12-07). Meant to count, it checks once; every such function in the labelled
    verifiers is wrong (3 of 3)."""
    tree = _syntax(func)
    return tree is not None and any(
        isinstance(node, ast.BoolOp) and len({ast.dump(v) for v in node.values}) < len(node.values)
        for node in ast.walk(tree))


def texts_compared(func: str) -> set[str]:
    """The texts (two word characters at least) a function holds the response, or something
    made of it, equal to: `response.strip() == 'I will write a paragraph.'`."""
    tree = _syntax(func)
    if tree is None:
        return set()
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and all(isinstance(op, ast.Eq) for op in node.ops):
            sides = [node.left, *node.comparators]
            texts = {s.value for s in sides if isinstance(s, ast.Constant) and isinstance(s.value, str)}
            if any(isinstance(n, ast.Name) and n.id == "response" for s in sides for n in ast.walk(s)):
                out |= {t for t in texts if re.search(r"\w\w", t)}
    return out


def plainly_wrong(instruction: str, back_translation: str, func: str) -> str | None:
    """Why a kept function plainly checks something other than its instruction (no judge
    needed), or None: its back-translation states another requirement, it repeats a check, or
    it names an emoji the instruction never gave (`'😊' in response` for "at least one emoji",
    `'😊' not in response` for "no emojis": 7 labelled verifiers, all wrong, 2 of them kept by
    the judge when their back-translations said "at least one emoji"), or it holds the response
    equal to a text the instruction never gave (`response.strip() == 'I will write a paragraph.'`
    for "Write your answer in one paragraph", 2026-11-27: 14 labelled verifiers and 9 labelled
    pairs, all wrong)."""
    if reason := other_requirement(instruction, back_translation):
        return reason
    if repeats_a_check(func):
        return "repeats_a_check"
    if symbols_named(func) - symbols_named(instruction):
        return "names_other_symbols"
    said = instruction.casefold()
    return "compares_to_other_text" if any(t.casefold().strip() not in said for t in texts_compared(func)) else None


def is_consistent(nli_labels: Iterable[str]) -> bool:
    """The paper drops an instruction if any back-translation contradicts it."""
    return "contradiction" not in set(nli_labels)


def sample_for(key: str, pool: Sequence[str], k: int, seed: int) -> list[str]:
    """k items of `pool` chosen for `key` by a seeded hash order: deterministic, independent
    of the order of the pool, and stable when other keys are added or removed."""
    return sorted(pool, key=lambda item: stable_hash("sample", seed, key, item))[:k]


def dpo_pairs(
    candidates: Sequence[tuple[str, float]],
    *,
    chosen_min: float,
    rejected_max: float,
    max_pairs: int,
) -> list[tuple[str, str]]:
    """(chosen, rejected) response ids for one prompt from (response_id, pass_rate) pairs.

    Chosen responses pass at least `chosen_min` of the verifiers, rejected ones at most
    `rejected_max`; pairs are spread over distinct responses first (2x2 before 1x4)."""
    chosen = sorted((c for c in candidates if c[1] >= chosen_min), key=lambda c: (-c[1], c[0]))
    rejected = sorted((c for c in candidates if c[1] <= rejected_max), key=lambda c: (c[1], c[0]))
    grid = sorted(product(range(len(chosen)), range(len(rejected))), key=lambda ij: (max(ij), ij))
    return [(chosen[i][0], rejected[j][0]) for i, j in grid[:max_pairs]]
