"""Scorers shared by the benchmarks: VQA accuracy, exact match, yes/no, option letters, POPE, MME, MMBench.

Every function here is pure (answers in, numbers out) so that each can be checked on hand-computed cases.
The VQA-family functions reproduce the official scripts (`official_vqa_accuracy`: the VQA API's vqaEval.py;
`evalai_answer` and `textvqa_accuracy`: the release's m4c evaluator; `gqa_prediction`: the release's GQA
converter); `vqa_accuracy` and `normalize_short_answer` are the lenient readings.
Fractions are in [0, 1]; the markdown tables print them as percentages. MME's scores are its own sums of
percentages (perception out of 2000, cognition out of 800), as its authors report them.
"""

from __future__ import annotations

import re
import string
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

# --- VQA answer normalisation (the VQA / EvalAI protocol) ---------------------------------------------

# Contractions written without their apostrophe, as answers often are, mapped to the spelled form.
CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's",
    "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll",
    "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've",
    "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll",
    "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = {"a", "an", "the"}
VQA_PUNCTUATION = [
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
# The official expression is "(?!<=\d)(\.)(?!\d)", whose first group is a (vacuous) look-ahead, not a
# look-behind: in effect it drops every period that is not followed by a digit. Same behaviour here.
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
# Both official scripts call periodStrip.sub("", text, re.UNICODE): re.UNICODE (= 32) lands in sub()'s
# `count` argument, so only the first 32 such periods are removed. Reproduced, since it changes scores.
PERIODS_STRIPPED = 32


def vqa_process_punctuation(text: str, every_period: bool = False) -> str:
    """The VQA API's processPunctuation (vqaEval.py): a mark next to a space, or any mark once the text holds
    a "1,000"-style comma, is deleted; other marks become spaces; then periods not before a digit go.

    The tests look at the text as given, not as it is being rewritten, exactly as the API does.
    `every_period` lifts the 32-period limit (the lenient reading).
    """
    strip_all = _COMMA_BETWEEN_DIGITS.search(text) is not None
    out = text
    for mark in VQA_PUNCTUATION:
        if strip_all or f"{mark} " in text or f" {mark}" in text:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=0 if every_period else PERIODS_STRIPPED)


def vqa_process_digit_article(text: str) -> str:
    """The VQA API's processDigitArticle: lowercase, number words -> digits, articles dropped,
    apostrophe-less contractions restored."""
    words = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(CONTRACTIONS.get(word, word))
    return " ".join(words)


def normalize_vqa_answer(text: str, every_period: bool = False) -> str:
    """The VQA API's answer processing, applied unconditionally: "Two dogs." -> "2 dogs"."""
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return vqa_process_digit_article(vqa_process_punctuation(text, every_period))


def evalai_answer(text: str) -> str:
    """The release's `EvalAIAnswerProcessor` (llava/eval/m4c_evaluator.py, from pythia/mmf), used for the
    VQAv2 / VizWiz uploads and for TextVQA scoring: lowercase, commas and "?" deleted, "'s" split off
    ("What's" -> "what 's"), then the VQA API's punctuation and digit/article processing."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return normalize_vqa_answer(text)


def _leave_one_out(answer: str, truths: Sequence[str]) -> float:
    """min(1, #matches / 3) averaged over the leave-one-annotator-out subsets (exact string comparison)."""
    total = 0.0
    for left_out in range(len(truths)):
        matches = sum(truth == answer for index, truth in enumerate(truths) if index != left_out)
        total += min(1.0, matches / 3)
    return total / len(truths)


def vqa_accuracy(prediction: str, ground_truths: Sequence[str]) -> float:
    """Lenient VQA accuracy: both sides always normalised (`normalize_vqa_answer`, every period not before a
    digit removed), then leave-one-out.

    With 10 annotators an answer given by 4 or more scores 1, by 3 scores 0.9 (= (7 * 1 + 3 * 2/3) / 10),
    by 2 scores 0.6, by 1 scores 0.3, by none 0.
    """
    if not ground_truths:
        raise ValueError("vqa_accuracy needs at least one ground-truth answer")
    answer = normalize_vqa_answer(prediction, every_period=True)
    return _leave_one_out(answer, [normalize_vqa_answer(truth, every_period=True) for truth in ground_truths])


def official_vqa_accuracy(answer: str, ground_truths: Sequence[str]) -> float:
    """The VQA API's accuracy (vqaEval.py `evaluate`) for one question.

    Newlines/tabs become spaces and outer space is stripped on both sides; the answer and the ground truths
    are normalised only when the ground truths disagree. With unanimous ground truths the comparison is
    exact: "Yes" against ten "yes" scores 0.
    """
    if not ground_truths:
        raise ValueError("official_vqa_accuracy needs at least one ground-truth answer")

    def clean(text: str) -> str:
        return text.replace("\n", " ").replace("\t", " ").strip()

    answer, truths = clean(answer), [clean(truth) for truth in ground_truths]
    if len(set(truths)) > 1:
        answer, truths = normalize_vqa_answer(answer), [normalize_vqa_answer(truth) for truth in truths]
    return _leave_one_out(answer, truths)


def textvqa_accuracy(prediction: str, ground_truths: Sequence[str]) -> float:
    """The release's TextVQA accuracy (m4c `TextVQAAccuracyEvaluator`): both sides through `evalai_answer`,
    then leave-one-out over exactly ten ground-truth answers."""
    if len(ground_truths) != 10:
        raise ValueError(f"TextVQA accuracy needs exactly 10 ground-truth answers, got {len(ground_truths)}")
    return _leave_one_out(evalai_answer(prediction), [evalai_answer(truth) for truth in ground_truths])


# --- exact match, yes/no ------------------------------------------------------------------------------


def gqa_prediction(text: str) -> str:
    """The release's GQA conversion (scripts/convert_gqa_for_eval.py): every trailing period stripped, then
    lowercased; nothing else ("Yes.." -> "yes", " yes" and "yes. " stay as they are). GQA's eval.py then
    compares it with the answer exactly."""
    return text.rstrip(".").lower()


def normalize_short_answer(text: str) -> str:
    """Lenient short-answer comparison: lowercase, outer space and trailing periods removed (" Yes. " -> "yes")."""
    return text.strip().lower().rstrip(".").rstrip()


def exact_match(prediction: str, truth: str) -> bool:
    return normalize_short_answer(prediction) == normalize_short_answer(truth)


def pope_yes_no(answer: str) -> str:
    """POPE's reading (the release's eval_pope.py): "no" if the first sentence, split on single spaces after
    its commas are removed, has the word no/No/not, else "yes". "There is no\ndog" reads yes ("no\ndog" is
    one word there)."""
    words = answer.split(".")[0].replace(",", "").split(" ")
    return "no" if any(word in ("no", "No", "not") for word in words) else "yes"


def pope_yes_no_lenient(answer: str) -> str:
    """This project's lenient POPE reading: as `pope_yes_no` but split on any whitespace."""
    words = answer.split(".")[0].replace(",", "").split()
    return "no" if any(word in ("no", "No", "not") for word in words) else "yes"


def mme_yes_no(answer: str) -> str:
    """MME's reading (its eval_tool/calculation.py): the lowercased answer if it is "yes"/"no", else "yes" if
    its first four characters contain "yes", else "no" if they contain "no", else "other"."""
    text = answer.lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


# --- multiple choice ----------------------------------------------------------------------------------

LETTERS = string.ascii_uppercase
_ANSWER_PREFIX = re.compile(
    r"^\s*(?:the\s+)?(?:best\s+)?(?:answer|option|choice)\b\s*(?:is)?\s*[:：]?\s*", re.I
)
_LEADING_LETTER = re.compile(r"^\(([A-Z])\)|^([A-Z])(?:[.:)]|$)(?:\s|$)")
_ANSWER_IS_LETTER = re.compile(r"\b(?:answer|option)\s+is\s*:?\s*\(?([A-Z])\)?(?![A-Za-z])", re.I)
_PARENTHESISED_LETTER = re.compile(r"\(([A-Z])\)")


def _plain(text: str) -> str:
    """Lowercase words without punctuation: "A red car." -> "a red car"."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def extract_choice(answer: str, options: Sequence[str]) -> int | None:
    """Index of the option an answer picks, or None when it picks none or is ambiguous.

    Accepted, in order: a bare letter ("B", "(B)", "B."), a leading letter with a delimiter ("B. a cat",
    "(B) a cat"), "the answer is B", a single parenthesised letter anywhere, or the text of exactly one
    option.
    Letters beyond the number of options are ignored. "A cat" is not read as option A.
    """
    valid = set(LETTERS[: len(options)])
    text = _ANSWER_PREFIX.sub("", answer.strip()).strip()
    if not text:
        return None
    match = _LEADING_LETTER.match(text)
    if match:
        letter = match.group(1) or match.group(2)
        if letter in valid:
            return LETTERS.index(letter)
    match = _ANSWER_IS_LETTER.search(answer)
    if match and match.group(1).upper() in valid:
        return LETTERS.index(match.group(1).upper())
    parenthesised = {letter for letter in _PARENTHESISED_LETTER.findall(text) if letter in valid}
    if len(parenthesised) == 1:
        return LETTERS.index(parenthesised.pop())
    said = {_plain(text), _plain(answer)}
    matching = [index for index, option in enumerate(options) if _plain(option) in said]
    return matching[0] if len(matching) == 1 else None


# The official readings of an option letter, each benchmark's own (what its script accepts, nothing more).


_SCIENCEQA_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")  # "." is any character, as there


def scienceqa_choice(answer: str, num_choices: int) -> int:
    """ScienceQA's eval_science_qa.py: "B" exactly, "B. ..." (letter, period, space), or exactly one
    "The answer is B" followed by any character; the letter must be among the first `num_choices` of A-E.
    Returns the option index, -1 when none is read (counted wrong: the release returns before its random pick).
    """
    options = ("A", "B", "C", "D", "E")
    if answer in options:
        letter = answer
    elif len(answer) >= 3 and answer[0] in options and answer[1:3] == ". ":
        letter = answer[0]
    else:
        found = _SCIENCEQA_ANSWER_IS.findall(answer)
        letter = found[0] if len(found) == 1 else "FAILED"
    return options.index(letter) if letter in options[:num_choices] else -1


def seed_is_correct(answer: str, truth: str) -> bool:
    """SEED-Bench as LLaVA's convert_seed_for_submission.py scores it: the answer string equals the letter."""
    return answer == truth


def video_check_answer(answer: str, truth_letter: str) -> bool:
    """MVBench / MLVU as the release's mvbench_mc.py / mlvu_mc.py score them (`check_ans`): with a ")" in
    the answer, the character before the first ")" is the letter; otherwise the whole answer must be it."""
    if ")" in answer:
        cut = answer.index(")")
        answer = answer[cut - 1 : cut] if cut else ""
    return answer == truth_letter


def first_letter(answer: str, letters: str) -> str | None:
    """The first character of the answer that is one of `letters` (the release's `first_char_as_answer`:
    "Because C" reads B), or None."""
    return next((character for character in answer if character in letters), None)


# VLMEvalKit's exact-matching reading of MMBench answers (vlmeval/utils/matching_util.py, `can_infer`).
_MMBENCH_REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_MMBENCH_ANSWER_IS = re.compile(r"(?i)(?:correct\s+)?answer\s+is\s+\**([ABCD])\**")


def mmbench_infer_option(answer: str, choices: Mapping[str, str]) -> str | None:
    """VLMEvalKit's `can_infer`: the letter of an answer to MMBench, "Z" for a refusal, None if unread.

    First a lone option letter among the words (punctuation .()[],:;!*#{} made spaces) within the last five
    words, else "answer is B", else the text of exactly one option inside the answer (when the answer is at
    most twice as long as all options together).
    """
    if "Failed to obtain answer via API" in answer:
        return None
    if any(refusal in answer for refusal in _MMBENCH_REFUSALS):
        return "Z"
    words = answer
    for mark in ".()[],:;!*#{}":
        words = words.replace(mark, " ")
    splits = [word.strip() for word in words.split()]
    named = [letter for letter in choices if letter in splits]
    if len(named) == 1:
        if splits.index(named[0]) > len(splits) - 5:
            return named[0]
    elif not named and "Z" in splits:
        return "Z"
    match = _MMBENCH_ANSWER_IS.search(answer)
    if match and match.group(1).upper() in choices:
        return match.group(1).upper()
    lowered = answer.lower()
    if len(lowered) > 2 * sum(len(str(text)) for text in choices.values()):
        return None
    inside = [letter for letter, text in choices.items() if str(text).lower() in lowered]
    return inside[0] if len(inside) == 1 else None


def letter_accuracy(records: Iterable[tuple[str, int | None]]) -> dict[str, dict]:
    """Accuracy per category from (category, 1/0/None) pairs; adds "all" and a "failed to parse" count."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for category, outcome in records:
        for key in ("all", category):
            totals[key][0] += int(bool(outcome))
            totals[key][1] += 1
            totals[key][2] += int(outcome is None)
    return {
        key: {"accuracy": right / count, "correct": right, "total": count, "unparsed": unparsed}
        for key, (right, count, unparsed) in sorted(totals.items(), key=lambda kv: (kv[0] != "all", kv[0]))
    }


# --- POPE -------------------------------------------------------------------------------------------


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float | int | None]:
    """Accuracy, precision, recall, F1 (positive class = "yes"), the share of "yes" answers, and the counts.

    predictions: already read as "yes"/"no" (`pope_yes_no`); labels: "yes"/"no". Anything but "no" counts as
    "yes", as in eval_pope.py. Precision, recall or F1 whose denominator is 0 (the official script divides by
    zero there, e.g. precision on a split with no "yes" answer) are None: undefined, not 0.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    if not labels:
        raise ValueError("pope_metrics needs at least one answer")
    pairs = [(p != "no", t != "no") for p, t in zip(predictions, labels, strict=True)]
    true_positive = sum(p and t for p, t in pairs)
    false_positive = sum(p and not t for p, t in pairs)
    true_negative = sum(not p and not t for p, t in pairs)
    false_negative = sum(not p and t for p, t in pairs)
    precision = true_positive / (true_positive + false_positive) if true_positive + false_positive else None
    recall = true_positive / (true_positive + false_negative) if true_positive + false_negative else None
    f1 = None
    if precision is not None and recall is not None and precision + recall:
        f1 = 2 * precision * recall / (precision + recall)
    return {
        "accuracy": (true_positive + true_negative) / len(pairs),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (true_positive + false_positive) / len(pairs),
        "total": len(pairs),
        "tp": true_positive,
        "fp": false_positive,
        "tn": true_negative,
        "fn": false_negative,
    }


# --- MME --------------------------------------------------------------------------------------------

MME_PERCEPTION = (
    "existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR",
)  # fmt: skip
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def mme_scores(records: Iterable[tuple[str, str, str, str]]) -> dict[str, dict]:
    """MME: per category, accuracy over questions + accuracy+ over images (both questions right), x 100.

    records: (category, image name, predicted yes/no/other, truth yes/no). Returns {"categories": {name:
    {"acc", "acc_plus", "score"}}, "perception": sum of perception scores, "cognition": likewise}.
    """
    per_image: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for category, image, prediction, truth in records:
        per_image[category][image].append(prediction == truth.strip().lower())
    categories = {}
    for category, images in per_image.items():
        answers = [correct for results in images.values() for correct in results]
        accuracy = sum(answers) / len(answers) * 100  # calculation.py's order of operations
        accuracy_plus = sum(all(results) for results in images.values()) / len(images) * 100
        categories[category] = {"acc": accuracy, "acc_plus": accuracy_plus, "score": accuracy + accuracy_plus}
    return {
        "categories": dict(sorted(categories.items())),
        "perception": sum(categories[c]["score"] for c in MME_PERCEPTION if c in categories),
        "cognition": sum(categories[c]["score"] for c in MME_COGNITION if c in categories),
    }


# --- helpers for judged benchmarks ---------------------------------------------------------------------


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("mean of no values")
    return sum(values) / len(values)


def group_mean(pairs: Iterable[tuple[str, float]], overall: str = "all") -> dict[str, float]:
    """Mean value per group and over everything ("all" first)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for group, value in pairs:
        groups[overall].append(value)
        groups[group].append(value)
    return {
        key: mean(values) for key, values in sorted(groups.items(), key=lambda kv: (kv[0] != overall, kv[0]))
    }


def count_by(values: Iterable[str]) -> Mapping[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for value in values:
        counts[value] += 1
    return dict(counts)
