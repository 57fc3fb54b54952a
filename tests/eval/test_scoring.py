"""Scorers on hand-computed cases: VQA normalisation and accuracy, yes/no readers, option letters, POPE, MME,
MMBench's circular evaluation, and group means."""

from __future__ import annotations

import pytest

from llava_mini.eval.scoring import (
    exact_match,
    extract_choice,
    first_letter,
    group_mean,
    letter_accuracy,
    mmbench_infer_option,
    mme_scores,
    mme_yes_no,
    normalize_short_answer,
    normalize_vqa_answer,
    pope_metrics,
    pope_yes_no,
    pope_yes_no_lenient,
    scienceqa_choice,
    video_check_answer,
    vqa_accuracy,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Two", "2"),
        ("The dog.", "dog"),
        ("a cat", "cat"),
        ("dont know", "don't know"),
        ("Yes!", "yes"),
        ("3.5", "3.5"),  # a period before a digit stays
        ("1,000", "1000"),  # a comma between digits: punctuation is deleted, not spaced
        ("red,blue", "red blue"),  # a comma elsewhere becomes a space
        ("left - right", "left right"),
        ("  ten\tapples\n", "10 apples"),
        ("none", "0"),
        ("", ""),
    ],
)
def test_vqa_normalisation(raw, expected):
    assert normalize_vqa_answer(raw) == expected


def test_vqa_accuracy_leave_one_out():
    ten = lambda right, n: [right] * n + ["other"] * (10 - n)  # noqa: E731
    assert vqa_accuracy("yes", ten("yes", 10)) == 1.0
    assert vqa_accuracy("yes", ten("yes", 4)) == pytest.approx(1.0)  # every subset of 9 keeps >= 3 matches
    assert vqa_accuracy("yes", ten("yes", 3)) == pytest.approx((7 * 1 + 3 * 2 / 3) / 10)  # 0.9
    assert vqa_accuracy("yes", ten("yes", 2)) == pytest.approx((8 * 2 / 3 + 2 * 1 / 3) / 10)  # 0.6
    assert vqa_accuracy("yes", ten("yes", 1)) == pytest.approx(0.3)
    assert vqa_accuracy("no", ten("yes", 10)) == 0.0
    # normalisation applies to both sides: "Two." matches "2", "the dog" matches "dog"
    assert vqa_accuracy("Two.", ["2"] * 10) == 1.0
    assert vqa_accuracy("The dog", ["dog"] * 3 + ["cat"] * 7) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="at least one"):
        vqa_accuracy("yes", [])


def test_short_answer_exact_match():
    assert normalize_short_answer(" Yes. ") == "yes"
    assert exact_match("Left.", "left")
    assert not exact_match("on the left", "left")
    assert not exact_match("", "left")


@pytest.mark.parametrize(
    ("answer", "pope", "mme"),
    [
        ("Yes", "yes", "yes"),
        ("No", "no", "no"),
        ("No, there is not.", "no", "no"),
        ("There is not a dog.", "no", "other"),
        ("Yes, there is a dog. No doubt.", "yes", "yes"),  # only POPE's first sentence counts
        ("no.", "no", "no"),
        ("", "yes", "other"),  # POPE reads anything without a negation as yes
        ("Nope", "yes", "no"),  # MME looks at the first four characters
        ("NO.", "yes", "no"),  # POPE's words are case-sensitive (no, No, not); MME lowercases
    ],
)
def test_yes_no_readers(answer, pope, mme):
    assert pope_yes_no(answer) == pope
    assert mme_yes_no(answer) == mme


def test_pope_splits_on_single_spaces_only():
    assert pope_yes_no("There is no\ndog") == "yes"  # "no\ndog" is one word to eval_pope.py
    assert pope_yes_no_lenient("There is no\ndog") == "no"
    assert pope_yes_no("There\tis no dog") == "no"


@pytest.mark.parametrize(
    ("answer", "scienceqa", "check_ans", "first"),
    [
        ("B", 1, True, "B"),
        ("B.", -1, False, "B"),
        ("B. a dog", 1, False, "B"),
        ("(B)", -1, True, "B"),
        ("B) a dog", -1, True, "B"),
        ("The answer is B.", 1, False, "B"),  # "T" is no option letter here; "h", "e" are lowercase
        ("The answer is B", -1, False, "B"),  # the script's pattern needs a character after the letter
        ("The answer is A. The answer is B.", -1, False, "A"),  # two matches: none
        ("b", -1, False, None),
        ("Because of the dog", -1, False, "B"),
        ("E", -1, False, None),  # beyond the four options
    ],
)
def test_official_letter_readings(answer, scienceqa, check_ans, first):
    assert scienceqa_choice(answer, 4) == scienceqa
    assert video_check_answer(answer, "B") is check_ans
    assert first_letter(answer, "ABCD") == first


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("B", "B"),
        ("(B) a dog", "B"),
        ("a dog", "B"),  # the text of exactly one option
        ("A or B", None),  # two letters, no option text
        ("the answer is b", "B"),  # "answer is" + a letter, any case
        ("B is right, I am sure of it now", None),  # the letter is not among the last five words
        ("Z", "Z"),
        ("Cannot determine the answer", "Z"),
        ("a cat or a dog", None),
        ("", None),
    ],
)
def test_mmbench_infer_option(answer, expected):
    choices = {"A": "a cat", "B": "a dog", "C": "a bird"}
    assert mmbench_infer_option(answer, choices) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("B", 1),
        ("(C)", 2),
        ("B.", 1),
        ("C. a dog", 2),
        ("(A) a cat", 0),
        ("The answer is D.", 3),
        ("Answer: B", 1),
        ("Best option:(C) a dog", 2),
        ("I think (B) is right", 1),
        ("a red car", 3),  # the text of exactly one option
        ("A cat sits there", None),  # an article is not a letter
        ("E", None),  # beyond the four options
        ("", None),
        ("(A) or (B)", 0),  # a leading letter wins
        ("maybe (A) or (B)", None),  # two letters in parentheses: ambiguous
        ("dog", None),
        ("Options are hard", None),  # "Options" is not the prefix "option"
        ("Option C", 2),
    ],
)
def test_extract_choice(answer, expected):
    assert extract_choice(answer, ["a cat", "a dog", "a bird", "A red car."]) == expected


def test_letter_accuracy():
    table = letter_accuracy([("x", 1), ("x", 0), ("y", None), ("y", 1)])
    assert list(table) == ["all", "x", "y"]
    assert table["all"] == {"accuracy": 0.5, "correct": 2, "total": 4, "unparsed": 1}
    assert table["y"]["unparsed"] == 1


def test_pope_metrics_hand_computed():
    predictions = ["yes", "yes", "no", "no", "yes"]
    labels = ["yes", "no", "no", "yes", "yes"]  # TP=2 FP=1 TN=1 FN=1
    metrics = pope_metrics(predictions, labels)
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(2 / 3)
    assert metrics["yes_ratio"] == pytest.approx(3 / 5)
    undefined = pope_metrics(["no", "no"], ["yes", "no"])  # no "yes": eval_pope.py divides by zero
    assert undefined["precision"] is None and undefined["f1"] is None and undefined["recall"] == 0.0
    with pytest.raises(ValueError, match="2 predictions for 1 labels"):
        pope_metrics(["yes", "no"], ["yes"])


def test_mme_scores_acc_plus():
    records = [
        ("existence", "1.jpg", "yes", "Yes"),
        ("existence", "1.jpg", "no", "No"),  # image 1: both right
        ("existence", "2.jpg", "yes", "Yes"),
        ("existence", "2.jpg", "other", "No"),  # image 2: one right
        ("code_reasoning", "3.png", "no", "yes"),
        ("code_reasoning", "3.png", "no", "no"),
    ]
    scores = mme_scores(records)
    existence = scores["categories"]["existence"]
    assert existence["acc"] == pytest.approx(75.0)
    assert existence["acc_plus"] == pytest.approx(50.0)
    assert scores["perception"] == pytest.approx(125.0)
    assert scores["cognition"] == pytest.approx(50.0 + 0.0)


def test_group_mean():
    assert group_mean([("a", 1.0), ("b", 3.0), ("a", 2.0)]) == {"all": 2.0, "a": 1.5, "b": 3.0}
