import json
from pathlib import Path

from autoif_dagster.method.selection import (
    asks_back, bounds_named, dedupe_key, dpo_pairs, is_consistent, is_title, not_an_answer, other_requirement, pass_rate, plainly_wrong,
    repeats_a_check, restates_the_query, sample_for, texts_named, units_named,
)
from autoif_dagster.sandbox.protocol import Verdict


def test_dedupe_key_ignores_case_spacing_and_final_punctuation():
    keys = {dedupe_key(t) for t in ["Use no commas.", "use  no commas", "Use no commas!"]}
    assert keys == {"use no commas"}
    assert dedupe_key("Use no commas") != dedupe_key("Use no colons")


def test_pass_rate_counts_errors_as_not_passing():
    verdicts = [Verdict("pass"), Verdict("fail"), Verdict("timeout"), Verdict("pass")]
    assert pass_rate(verdicts) == (2, 1, 0.5)
    assert pass_rate([]) == (0, 0, 0.0)


def test_consistency_drops_any_contradiction():
    assert is_consistent(["entailment", "neutral"])
    assert not is_consistent(["entailment", "contradiction", "entailment"])


def test_sample_for_is_deterministic_order_free_and_seeded():
    pool = [f"q{i}" for i in range(50)]
    a = sample_for("inst-1", pool, 5, seed=0)
    assert a == sample_for("inst-1", list(reversed(pool)), 5, seed=0)
    assert len(set(a)) == 5 and set(a) <= set(pool)
    assert a != sample_for("inst-2", pool, 5, seed=0)
    assert a != sample_for("inst-1", pool, 5, seed=1)
    # adding items to the pool keeps earlier picks unless a new item ranks above them
    grown = sample_for("inst-1", pool + ["q50"], 5, seed=0)
    assert len(set(a) & set(grown)) >= 4


def test_dpo_pairs_two_by_two_and_thresholds():
    cands = [("a", 1.0), ("b", 0.5), ("c", 0.75), ("x", 0.0), ("y", 0.0), ("z", 0.25)]
    pairs = dpo_pairs(cands, chosen_min=0.5, rejected_max=0.0, max_pairs=4)
    # chosen ranked a, c, b; rejected x, y; z (0.25) is neither
    assert pairs == [("a", "x"), ("a", "y"), ("c", "x"), ("c", "y")]
    assert dpo_pairs(cands, chosen_min=0.5, rejected_max=0.0, max_pairs=1) == [("a", "x")]
    assert dpo_pairs([("a", 1.0)], chosen_min=0.5, rejected_max=0.0, max_pairs=4) == []


def test_an_answer_made_of_the_querys_words_restates_it():
    query = "Since the interpreter had the same experience, he offered to help me. in English"
    assert restates_the_query("Since the interpreter had the same experience, he offered to help me?", query, "")
    assert restates_the_query("write an ap biology frq 5 question on unit 3.", "Write an AP Biology FRQ 5 question on Unit 3", "")
    # the instruction's own words (an end phrase it asks for) add nothing either
    assert restates_the_query("Create a Terraform module for an EC2 instance. Is there anything else?",
                              "Create a Terraform module for an EC2 instance",
                              "End your answer with the exact phrase 'Is there anything else?'")
    # plurals folded: "fees" and "types" are the query's "fee" and "type"
    fees = "You've just ignored student fee and fee type. Each fee type could be related to a pricing."
    assert restates_the_query("Student fees and fee types are related to pricing.", fees, "")
    assert not restates_the_query("Bill each student per fee type: tuition, housing and lab fees, each with its own price list.",
                                  fees, "")
    assert not restates_the_query("What did the interpreter offer to help you with, and when?", query, "")
    assert not restates_the_query("Use `terraform init`, then declare an aws_instance resource with an AMI.",
                                  "Create a Terraform module to provision an aws ec2 instance", "")
    assert not restates_the_query("", query, "")


def test_hashtags_and_misspelt_query_words_are_the_querys_words():
    epc = "What are the stages of an EPC project in the energy and chemicals industry?"
    assert restates_the_query("#StagesOfEPCProject #EnergyAndChemicalsIndustry", epc, "Use exactly two hashtags")
    assert not restates_the_query("#Engineering #Procurement #Construction #Commissioning", epc, "")
    # the query's typos ("dumbell", "alrgias") corrected are not new words; short words must match exactly
    assert restates_the_query("Isotropic hard core dumbbell fluid", "isotropic hard core dumbell fluid?", "")
    assert not restates_the_query("Yes, it is a hard core", "is it a hard cure", "")
    # an ending added or taken off, words run together (rounds 2026-11-13, 2026-11-01)
    homeless = "Tell me about homelessness and potential solutions"
    assert restates_the_query("HOMELESS AND POTENTIAL SOLUTIONS", homeless, "Write your answer in all capital letters")
    assert not restates_the_query("Housing first, rent support and health care reduce it.", homeless, "")
    team = "What’s a funny name for my Rec league basketball team?"
    assert restates_the_query("funnynameforrecleaguebasketballteam", team, "Use all lowercase letters")
    market = "can you propose a name for real estate market place?"
    assert restates_the_query("RealEstateMarketPlace", market, "")
    assert not restates_the_query('"MarketPlacePro"', market, "")  # "pro" is new; "market" + 8 letters is no ending


def test_a_title_made_of_the_querys_words_restates_it():
    # real answers (round 2026-11-27), each scored above the quality bar
    plan = "Help me plan my afternoon"
    assert not_an_answer("PLANNING MY AFTERNOON", plan, "Write the answer in all capital letters") == "restates_as_a_title"
    kinetochore = "Where do specialized kinetochore proteins attach to chromosomes?"
    assert not_an_answer("CHROMOSOME ATTACHMENT SITE OF SPECIALIZED KINETOCHORE PROTEINS", kinetochore,
                         "") == "restates_as_a_title"
    # a sentence with a verb states something; a query asking for a name or a list is answered by one
    assert is_title("**Chromatin STRUCTURE**") and is_title("Soul Herder Not Shaman")
    assert not is_title("Megan worked 20 hours, Kelly worked 40 hours") and not is_title("It binds the centromere.")
    assert not is_title("Two lines\nof text") and not is_title("")
    assert not_an_answer("Kinetochores bind the centromere", kinetochore, "") is None
    assert not_an_answer("Real Estate Market Finder", "can you propose a name for real estate market place?", "") is None


def test_one_sentence_where_a_piece_of_writing_was_asked_is_not_an_answer():
    # real answers (rounds 2026-11-09, -11-19), scored above the quality bar or next to it
    heart = "Can you re-write a modern version of the tell tale heart but the heart is a cellphone?"
    assert not_an_answer("A modern version of the tell tale heart where the heart is a cellphone, showcasing the complex "
                         "emotional journey of a person who is torn between their love and their duty.", heart,
                         "Do not use the word 'about' in your answer") == "one_sentence_for_a_piece"
    essay = "write me an essay on if equality is good or bad based off of harris bergeron"
    assert not_an_answer("The essay should address whether equality is good or bad based on Harris Bergeron's "
                         "perspective on the subject.", essay, "") == "one_sentence_for_a_piece"
    # the piece written; a question how to write one; a count that asks for one sentence; code
    story = "A man buys a phone. It beats under his floorboards.\nHe confesses."
    assert not_an_answer(story, heart, "") is None
    assert not_an_answer("Start with a hook, then state the topic.", "How to write a blog intro", "") is None
    assert not_an_answer("The phone rang under the floor.", "Write a one sentence story", "") is None
    assert not_an_answer("The phone rang under the floor.", heart, "Answer in fewer than 12 words") is None
    assert not_an_answer("function first(o) { return Object.entries(o)[0]; }",
                         "Write me a typescript function that returns an object's first key", "") is None


def test_an_answer_announced_and_never_given_is_not_an_answer():
    # real answers (rounds 2026-11-27, 2026-12-07)
    networks = "I'll ask you some questions regarding computer networks and security. Explains in details"
    assert not_an_answer("Certainly! Here's a detailed explanation of computer networks and security in simple terms "
                         "with examples.", networks, "Do not use the word 'the'") == "announces_an_answer"
    assert not_an_answer("Sure, here's how to do it with RealestateMall.", "could you teach how to do this with "
                         "RealestateMall", "") == "announces_an_answer"
    # the answer follows the announcement
    assert not_an_answer("Sure, here's how: open Settings, then pick RealestateMall.", "how do I do this", "") is None
    assert not_an_answer("Here is the query: `SELECT * FROM t`.", "how to query t", "") is None
    assert not_an_answer("Sure, here's how.\n1. Open Settings.\n2. Pick it.", "how do I do this", "") is None


def test_an_answer_that_is_one_question_asks_back():
    assert asks_back("¿Cómo se relaciona la combinación de harina de garbanzo con las alergias alimentarias?")
    assert asks_back("  What did the interpreter offer to help you with, and when?\n")
    assert not asks_back("Chickpea flour is a legume. Can it cause allergies? Yes, in people allergic to legumes.")
    assert not asks_back("Which one? The second.")
    assert not asks_back("Two lines:\nwhat next?")
    assert not asks_back("No, it is fine.")
    query, instruction = "coneccion entre harina de garbanzo y alrgias alimentarias", "Include a question mark"
    assert not_an_answer("harina de garbanzo y alergias alimentarias?", query, instruction) == "restates_the_query"
    assert not_an_answer("¿Cómo se relaciona la harina de garbanzo con las alergias?", query, instruction) == "asks_a_question"
    assert not_an_answer("Sí: la harina de garbanzo puede causar alergias en personas alérgicas a las legumbres.",
                         query, instruction) is None


def test_a_back_translation_stating_plainly_another_requirement_is_told_apart():
    assert other_requirement("Answer in fewer than 40 words", "Keep the response under 40 characters") == "counts_other_units"
    assert other_requirement("Use no more than 5 lines", "Write no more than five words") == "counts_other_units"
    assert other_requirement("Use only words that end with 'ly'", "End with the word 'ly'") == "drops_the_scope"  # one word
    assert other_requirement("Use only words that end with 'ly'", "Make sure the words end with 'ly'") is None
    assert other_requirement("Ensure all words start with the letter 'a'", "Start the response with 'a'") == "drops_the_scope"
    assert other_requirement("Make every sentence shorter than 12 words", "Write fewer than 12 words") == "drops_the_scope"
    # same unit and scope, a synonym of it, or no unit named on one side: left to the judge
    for same in [("Answer in fewer than 40 words", "Write under 40 words"),
                 ("Use all capital letters", "All characters in the response are uppercase"),
                 ("Use all capital letters", "Make the response all uppercase"),
                 ("Write every word with its first letter capitalized", "All words start with an uppercase letter"),
                 ("Every sentence must end with '!'", "End each sentence with an exclamation mark"),
                 ("Do not use the word 'line'", "Do not include the word 'line' anywhere")]:
        assert other_requirement(*same) is None, same
    assert units_named("Do not use the word 'line'") == {"word"}  # a quoted word is content, not a unit


def test_a_scope_said_with_only_is_a_scope_but_a_count_or_a_whole_response_rule_is_not():
    # real pair (round 2026-12-07): `response[0].lower() in 'aeiou'` for every word
    assert other_requirement("Use only words that start with a vowel", "Start the response with a vowel") == "drops_the_scope"
    assert other_requirement("Use only sentences ending with '?'", "End the response with '?'") == "drops_the_scope"
    for same in [("Use only words that start with a vowel", "Every word begins with a vowel"),
                 ("Include only two numbers", "Include exactly two numbers"),
                 ("Use only ASCII characters", "The response contains ASCII only"),
                 ("Use only uppercase words for all instruction headings", "The response is entirely uppercase"),
                 ("Use only one letter", "The response is one uppercase or lowercase letter")]:
        assert other_requirement(*same) is None, same


def test_a_back_translation_that_names_no_unit_for_a_counted_one_is_told_apart():
    # real pairs (round 2026-11-01): `response.endswith('.')` for one sentence, `response == 'Yes'` for a word
    assert other_requirement("Provide your answer in one sentence", "End the response with a period") == "drops_the_count"
    assert other_requirement("Answer with a single word", "The response should be exactly 'Yes'") == "drops_the_count"
    for same in [("Answer in exactly three sentences", "The response has three sentences"),
                 ("Include at least one special character", "Include '!' or '?'"),  # a kind of character, not a length
                 ("Include the phrase 'one word'", "Include 'one word' in the response")]:
        assert other_requirement(*same) is None, same


def test_a_back_translation_that_states_other_numbers_is_told_apart():
    # real pairs: `any(c in response for c in '😊')` for two emojis; `len(response.split()) <= 4` for one word
    assert other_requirement("Use at least two emojis in your answer, like 😊",
                             "Include at least one emoji in the response") == "states_other_numbers"
    assert other_requirement("Use only one word for each instruction",
                             "Do not have more than four words in the response") == "states_other_numbers"
    for same in [("Include the word 'code' at least three times", "Include 'code' 3 times or more"),
                 ("Include the word 'code' at least three times", "Count the occurrences of 'code'"),  # no number: the judge's
                 ("Use the number '7' in your answer", "Include '7' once")]:  # quoted numbers are content
        assert other_requirement(*same) is None, same


def test_a_back_translation_that_drops_the_number_asked_for_is_told_apart():
    # real pairs (2026-12-07, and the issue's): the word once for "at least twice"
    assert other_requirement("Include the word 'programming' at least twice",
                             "Include the word 'programming' in the response") == "drops_the_number"
    assert other_requirement("Use exactly two hashtags, like #topic", "Include a '#' character") == "drops_the_number"
    for same in [("Include the word 'code' at least three times", "Count the occurrences of 'code'"),  # counting, said
                 ("Include at least one question mark in your answer", "Include a question mark"),  # one is "a"
                 ("Use the number '7' twice", "Include '7' two times")]:
        assert other_requirement(*same) is None, same


def test_a_function_that_repeats_a_check_is_plainly_wrong():
    # real functions (2026-12-07, the issue's): meant to count, each checks once
    assert repeats_a_check("def evaluate(response):\n    return 'python' in response and 'python' in response")
    assert repeats_a_check("def evaluate(response):\n    return '*' in response and '*' in response and '*' in response")
    assert repeats_a_check("def evaluate(r):\n    return r == ',' or (len(r) > 2 and r == ',')") is False  # nested: not one chain
    assert not repeats_a_check("def evaluate(response):\n    return 'very' not in response and 'really' not in response")
    assert not repeats_a_check("def evaluate(response: return")  # does not parse: cross-validation's business
    twice = "def evaluate(response):\n    return 'python' in response and 'python' in response"
    assert plainly_wrong("Include the keyword 'python' at least twice", "Include 'python' two times",
                         twice) == "repeats_a_check"
    assert plainly_wrong("Use no commas", "Include a comma", "def evaluate(r):\n    return ',' in r") is None


def test_a_function_naming_an_emoji_its_instruction_never_gave_is_plainly_wrong():
    # real functions (2026-11-23, -28, -30): one emoji stands for every emoji
    one = "def evaluate(response):\n    return any(char in response for char in '😊😂')"
    assert plainly_wrong("Insert at least one emoji in your answer", "Include at least one emoji", one) == "names_other_symbols"
    assert plainly_wrong("Do not use any emojis", "Do not use any emojis",
                         "def evaluate(r):\n    return '😊' not in r") == "names_other_symbols"
    assert plainly_wrong("Use at least one emoji, like 😊", "Include 😊", "def evaluate(r):\n    return '😊' in r") is None
    ranges = "def evaluate(r):\n    return any(0x1F600 <= ord(c) <= 0x1F64F for c in r)"  # a range names no symbol
    assert plainly_wrong("Insert at least one emoji", "Include at least one emoji", ranges) is None


def test_a_function_holding_the_response_equal_to_other_text_is_plainly_wrong():
    # real function (2026-11-27); the back-translation said "Write a paragraph"
    fixed = "def evaluate(response): return response.strip() == 'I will write a paragraph.'"
    assert plainly_wrong("Write your answer in one paragraph", "Write a paragraph", fixed) == "compares_to_other_text"
    assert plainly_wrong("Answer with a single word", "The response is one word",
                         "def evaluate(response):\n    return response == 'Yes'") == "compares_to_other_text"
    # text the instruction gave, a mark, or a comparison that is not of the response
    assert plainly_wrong("Start your answer with the word 'Certainly'", "The first word is 'Certainly'",
                         "def evaluate(response):\n    return response.split()[0] == 'Certainly'") is None
    assert plainly_wrong("Add a period at the end", "End with a period", "def evaluate(r):\n    return r[-1] == '.'") is None
    assert plainly_wrong("Use no commas", "No commas", "def evaluate(response):\n    x = 'ab'\n    return x == 'ab' and ',' not in response") is None


def test_a_back_translation_that_bounds_the_other_side_of_its_number_is_told_apart():
    # real pairs (2026-11-04, 2026-11-23): exactly two '**' is one bold phrase; exactly two for "at least twice"
    assert other_requirement("Highlight at least two phrases with markdown bold, like **this**",
                             "Include exactly two '**' symbols in the response") == "bounds_the_other_side"
    assert other_requirement("Include the keyword 'python' at least twice",
                             "Count exactly two occurrences of the word 'python' in the response") == "bounds_the_other_side"
    assert other_requirement("Use fewer than 3 commas", "The response should not exceed three commas") is None
    assert bounds_named("The response should not exceed 3 characters") == {"at_most"}  # negated, the side flips
    assert bounds_named("It shouldn't be over 100 words") == {"at_most"}
    assert bounds_named("Use more than 2 commas") == {"at_least"}
    assert bounds_named("Include a caption above each paragraph") == set()  # no number: a place, not a bound
    # "under" and "no more than" are one side (labelled the same requirement)
    assert other_requirement("Keep your answer under 7 words", "Do not have more than seven words") is None


def test_a_back_translation_that_names_text_its_instruction_never_gave_is_told_apart():
    # real pairs (2026-11-04, 2026-11-28): a fixed string or one emoji where the instruction asks for a kind
    assert other_requirement("Start with an introductory sentence",
                             "Start the response with 'Hello, world!'") == "names_other_text"
    assert other_requirement("Do not use any emojis or emoticons", "Do not use the emojis 😊 or 😄 anywhere") == "names_other_text"
    for same in [("Add the phrase 'please' at the beginning", "Start the response with 'Please'"),  # case aside
                 ("End your answer with the exact phrase 'Is there anything else?'",
                  'End the response with "Is there anything else??"'),  # the closing mark doubled
                 ("Use at least one emoji, like 😊", "Include 😊"),
                 ("End your answer with a question mark", "End the response with '?'"),  # a mark, said in words
                 ("Put a title in double angle brackets, like <<My Title>>", "Start with '<<'")]:
        assert other_requirement(*same) is None, same
    assert texts_named("Include 'python', \"**this**\" and 🥳, not '?'") == {"python", "**this**", "🥳"}


def test_a_back_translation_that_drops_where_the_instruction_puts_something_is_told_apart():
    # real pair (round 2026-11-12): `'Yes' in response or 'No' in response` for "at the end"
    yes_no = "Include the phrase 'Yes' or 'No' at the end of your answer"
    assert other_requirement(yes_no, "Include the words 'Yes' or 'No' in the response") == "drops_the_position"
    assert other_requirement("Start your response with 'Dear'", "Include 'Dear'") == "drops_the_position"
    assert other_requirement("Make the last sentence a question", "Include a question mark") == "drops_the_position"
    # any word of place in the back-translation keeps the position; quoted text is no place
    for same in [(yes_no, "End the response with either 'Yes' or 'No'"),
                 ("Finish with a question", "The response ends with '?'"),
                 ("Put a title in double angle brackets at the top, like <<My Title>>", "Start with '<<'"),
                 ("Start your answer with the word 'Certainly'", "The first word is 'Certainly'"),
                 ("Include the word 'end'", "Include the word 'end' in the response"),
                 ("Conclude with a question", "The response's last character is '?'")]:  # "response's" opens no quote
        assert other_requirement(*same) is None, same
    assert other_requirement("Write the word 'end' at the top", "Include the word 'end'") == "drops_the_position"
    assert other_requirement("Include the word 'at the end'", "Include the word 'at the end'") is None


def test_the_rules_flag_no_labelled_pair_that_is_the_same_requirement():
    root = Path(__file__).parent.parent
    for path, least in [(root / "tests" / "fixtures" / "consistency_pairs.jsonl", 5),
                        (root / "benchmarks" / "data" / "consistency_heldout.jsonl", 20)]:
        pairs = [json.loads(line) for line in path.open()]
        flagged = [p for p in pairs if other_requirement(p["instruction"], p["back_translation"])]
        assert len(flagged) >= least and not [p for p in flagged if p["same"]], path
