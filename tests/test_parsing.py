"""The answer parser on answers written the way LLaVA-1.6-Mistral and PaliGemma write them.

Each table row is (model answer, expected label, expected explanation); explanations are compared exactly.
"""

from __future__ import annotations

import pytest

from vlx.configs import group_option
from vlx.tasks.parsing import parse_answer, parse_label

ESNLI_CASES = [
    # bare labels: PaliGemma's usual answer, any case, markdown, quotes
    ("entailment", "entailment", ""),
    ("ENTAILMENT", "entailment", ""),
    ("**Contradiction**", "contradiction", ""),
    ("'neutral'", "neutral", ""),
    ('"Neutral"', "neutral", ""),
    ("contradiction<eos>", "contradiction", ""),
    # answer fields
    ("The answer is: entailment.", "entailment", ""),
    ("Answer: neutral", "neutral", ""),
    ("Final answer: Entailment", "entailment", ""),
    (
        "Label: entailment\nExplanation: The man is riding a horse on the beach.",
        "entailment",
        "The man is riding a horse on the beach.",
    ),
    (
        "**Answer:** Contradiction\n**Explanation:** The hypothesis says the man is sitting, but he is standing.",
        "contradiction",
        "The hypothesis says the man is sitting, but he is standing.",
    ),
    (
        "The answer is neutral. The image could suggest entailment, but there is no evidence the man is a teacher.",
        "neutral",
        "The image could suggest entailment, but there is no evidence the man is a teacher.",
    ),
    # label first, then the reason
    (
        "Neutral. The man may or may not be waiting for a bus.",
        "neutral",
        "The man may or may not be waiting for a bus.",
    ),
    ("Contradictory. The image shows two men, not women.", "contradiction", "The image shows two men, not women."),
    (
        "Entailment - the image clearly shows two dogs playing in the snow.",
        "entailment",
        "The image clearly shows two dogs playing in the snow.",
    ),
    ("Neutral The man is standing near a car.", "neutral", "The man is standing near a car."),
    ("Entailment. Because the girl is holding a red balloon.", "entailment", "The girl is holding a red balloon."),
    (
        "Neutral\n\n* The image shows a woman holding a baby.\n* It does not indicate whether she is the mother.",
        "neutral",
        "The image shows a woman holding a baby. It does not indicate whether she is the mother.",
    ),
    (
        "Entailment\n\nThe image shows a group of people gathered around a table, eating dinner together, which "
        "supports the hypothesis.",
        "entailment",
        "The image shows a group of people gathered around a table, eating dinner together, which supports the "
        "hypothesis.",
    ),
    # label after a preamble, verb and adjective forms
    (
        "Based on the image, the hypothesis is neutral, as there is no indication of the man's mood.",
        "neutral",
        "There is no indication of the man's mood.",
    ),
    (
        "The hypothesis is entailed by the image, as the woman is clearly holding an umbrella.",
        "entailment",
        "The woman is clearly holding an umbrella.",
    ),
    (
        "The hypothesis contradicts the image because the dog is black, not white.",
        "contradiction",
        "The dog is black, not white.",
    ),
    ("The relationship between the image and the hypothesis is neutral.", "neutral", ""),
    (
        "I would classify this as neutral since the image doesn't show whether the girl is happy.",
        "neutral",
        "The image doesn't show whether the girl is happy.",
    ),
    (
        "The image shows a man riding a horse on a beach. Therefore, the hypothesis is entailed.",
        "entailment",
        "The image shows a man riding a horse on a beach.",
    ),
    (
        "The image shows two people walking, so the hypothesis is entailed.",
        "entailment",
        "The image shows two people walking.",
    ),
    ("The man is running, which contradicts the hypothesis.", "contradiction", "The man is running."),
    (
        "The hypothesis is contradicted by the image. In the image, the man is wearing a blue shirt, not a red one.",
        "contradiction",
        "In the image, the man is wearing a blue shirt, not a red one.",
    ),
    (
        'The hypothesis "A woman is sleeping" contradicts the image, which shows a woman running.',
        "contradiction",
        'The hypothesis "A woman is sleeping" contradicts the image, which shows a woman running.',
    ),
    (
        "The image shows a man on a bike. The hypothesis is neutral because it's unclear whether he is going to work.",
        "neutral",
        "The image shows a man on a bike. It's unclear whether he is going to work.",
    ),
    # negated labels are not statements of them
    (
        "The image does not provide enough information to entail or contradict the hypothesis, so it is neutral.",
        "neutral",
        "The image does not provide enough information to entail or contradict the hypothesis.",
    ),
    (
        "The image neither entails nor contradicts the hypothesis. Neutral.",
        "neutral",
        "The image neither entails nor contradicts the hypothesis.",
    ),
    (
        "It is not possible to determine whether the man is happy, so the hypothesis is neutral.",
        "neutral",
        "It is not possible to determine whether the man is happy.",
    ),
    ("Neutral, not entailment.", "neutral", "Neutral, not entailment."),
    ("The image does not entail the hypothesis.", None, "The image does not entail the hypothesis."),
    ("Not entailment.", None, "Not entailment."),
    # chat artefacts
    (
        "[/INST] Entailment. The children are playing soccer in a park.</s>",
        "entailment",
        "The children are playing soccer in a park.",
    ),
    (
        "ASSISTANT: Neutral\nThe photo does not show what the people are talking about.",
        "neutral",
        "The photo does not show what the people are talking about.",
    ),
    (
        "USER: <image>\nAnswer with 'entailment', 'contradiction' or 'neutral' if the hypothesis 'A dog runs' follows "
        "the image, contradicts it, or is neutral to it. ASSISTANT: Contradiction. The dog is lying on a couch.",
        "contradiction",
        "The dog is lying on a couch.",
    ),
    # hedges: two labels in the deciding statement -> None
    ("It could be entailment or neutral.", None, "It could be entailment or neutral."),
    (
        "Neutral or contradiction, depending on the interpretation.",
        None,
        "Neutral or contradiction, depending on the interpretation.",
    ),
    ("Answer: entailment or neutral", None, "Answer: entailment or neutral"),
    # refusals, non-answers
    ("I'm sorry, I can't help with that.", None, "I'm sorry, I can't help with that."),
    (
        "I cannot determine whether the hypothesis is entailed from this image.",
        None,
        "I cannot determine whether the hypothesis is entailed from this image.",
    ),
    ("As an AI, I cannot view images.", None, "As an AI, I cannot view images."),
    ("yes", None, "Yes"),  # yes/no only answers a yes/no question (memes), not a three-way one
    ("unanswerable", None, "Unanswerable"),
    ("", None, ""),
    ("  </s> ", None, ""),
]

MEME_CASES = [
    # bare labels and PaliGemma's yes/no ("Is this image offensive?": yes -> offensive, no -> not offensive)
    ("offensive", "offensive", ""),
    ("OFFENSIVE", "offensive", ""),
    ("Not Offensive", "not offensive", ""),
    ("'not offensive'", "not offensive", ""),
    ("non-offensive", "not offensive", ""),
    ("yes", "offensive", ""),
    ("no", "not offensive", ""),
    ("No.", "not offensive", ""),
    ("yes it is", "offensive", ""),
    ("Yes, because it mocks the victims of 9/11.", "offensive", "It mocks the victims of 9/11."),
    ("No, it is just a funny picture of a dog.", "not offensive", "It is just a funny picture of a dog."),
    ("no, it's just a picture of a dog", "not offensive", "It's just a picture of a dog"),
    ("Is this image offensive? No.", "not offensive", ""),
    ("Is this image offensive? Yes, it mocks transgender people.", "offensive", "It mocks transgender people."),
    # stated offensive
    ("This meme is offensive.", "offensive", ""),
    ("The image is offensive because it uses a racial slur.", "offensive", "It uses a racial slur."),
    (
        "The meme is offensive as it promotes negative stereotypes about Muslims.",
        "offensive",
        "It promotes negative stereotypes about Muslims.",
    ),
    (
        "This meme could be considered offensive because it trivializes the Holocaust.",
        "offensive",
        "It trivializes the Holocaust.",
    ),
    (
        "The image is highly offensive, as it promotes hate speech against immigrants.",
        "offensive",
        "It promotes hate speech against immigrants.",
    ),
    ("Offensive. The meme mocks a religious group.", "offensive", "The meme mocks a religious group."),
    (
        "Offensive: the meme compares Mexican immigrants to criminals.",
        "offensive",
        "The meme compares Mexican immigrants to criminals.",
    ),
    (
        "**Offensive**\n\nThe meme uses a racial slur against Asian people.",
        "offensive",
        "The meme uses a racial slur against Asian people.",
    ),
    (
        "Answer: offensive\nExplanation: The meme mocks people who are overweight.",
        "offensive",
        "The meme mocks people who are overweight.",
    ),
    (
        "Yes, this image is offensive. It makes fun of people with disabilities.",
        "offensive",
        "It makes fun of people with disabilities.",
    ),
    (
        "The meme is offensive to women because it objectifies them.",
        "offensive",
        "The meme is offensive to women because it objectifies them.",
    ),
    ("The meme is offensive and not funny.", "offensive", "The meme is offensive and not funny."),
    (
        "The image is offensive. However, it could also be seen as satire.",
        "offensive",
        "However, it could also be seen as satire.",
    ),
    (
        "[INST] <image>\nIs this image offensive? If it is offensive, give a single line explanation. Otherwise, "
        "simply state that it is 'not offensive'. [/INST] The image is offensive because it depicts a lynching.",
        "offensive",
        "It depicts a lynching.",
    ),
    # stated not offensive: the "offensive" inside must never win
    (
        "The meme is not offensive. It is a lighthearted joke about cats.",
        "not offensive",
        "It is a lighthearted joke about cats.",
    ),
    ("This image is not offensive.", "not offensive", ""),
    (
        "No, this image is not offensive. It shows a group of friends at a party.",
        "not offensive",
        "It shows a group of friends at a party.",
    ),
    (
        "The image shows a cat wearing sunglasses. It is not offensive.",
        "not offensive",
        "The image shows a cat wearing sunglasses.",
    ),
    (
        "The image is not considered offensive as it simply shows a family at the beach.",
        "not offensive",
        "It simply shows a family at the beach.",
    ),
    ("The meme is non-offensive.", "not offensive", ""),
    (
        "The meme isn't offensive; it's just a silly joke about cats.",
        "not offensive",
        "It's just a silly joke about cats.",
    ),
    ("It's not offensive, just a cute picture of a dog.", "not offensive", "Just a cute picture of a dog."),
    (
        "There is nothing offensive about this image; it shows a family having a picnic.",
        "not offensive",
        "It shows a family having a picnic.",
    ),
    ("I don't think this meme is offensive.", "not offensive", ""),
    ("The image does not contain any offensive content.", "not offensive", ""),
    (
        "Not offensive - it's a meme about a cat's reaction to a cucumber.",
        "not offensive",
        "It's a meme about a cat's reaction to a cucumber.",
    ),
    (
        "The image is not offensive as it does not contain any hateful content.",
        "not offensive",
        "It does not contain any hateful content.",
    ),
    ("Offensive: no", "not offensive", ""),
    (
        "USER: <image>\nIs this image offensive? Otherwise, simply state that it is 'not offensive'. ASSISTANT: "
        "not offensive</s>",
        "not offensive",
        "",
    ),
    # no label stated -> None, the text kept as the explanation
    (
        "The meme uses a racist stereotype about Black people.",
        None,
        "The meme uses a racist stereotype about Black people.",
    ),
    ("I'm sorry, but I cannot help with that request.", None, "I'm sorry, but I cannot help with that request."),
    (
        "It is difficult to determine whether this image is offensive without more context.",
        None,
        "It is difficult to determine whether this image is offensive without more context.",
    ),
    ("As an AI, I don't have personal opinions.", None, "As an AI, I don't have personal opinions."),
    (
        "As an AI language model, I cannot determine if an image is offensive or not.",
        None,
        "As an AI language model, I cannot determine if an image is offensive or not.",
    ),
    (
        "As an AI, I don't judge, but this meme is offensive.",
        None,
        "As an AI, I don't judge, but this meme is offensive.",
    ),
    (
        "Some people might find this offensive because it mocks Islam.",
        None,
        "Some people might find this offensive because it mocks Islam.",
    ),
    ("Offensive or not offensive depends on the viewer.", None, "Offensive or not offensive depends on the viewer."),
    ("No, I'm sorry, I cannot help with that.", None, "No, I'm sorry, I cannot help with that."),
]

SHAPES_CASES = [
    (
        "Contradiction. The image shows a red circle, not a blue square.",
        "contradiction",
        "The image shows a red circle, not a blue square.",
    ),
    (
        "Entailment: there are three green triangles in the image.",
        "entailment",
        "There are three green triangles in the image.",
    ),
    (
        "The hypothesis is neutral because the image does not show the size of the shapes.",
        "neutral",
        "The image does not show the size of the shapes.",
    ),
    ("neutral", "neutral", ""),
    ("The image contradicts the hypothesis. There is no yellow star.", "contradiction", "There is no yellow star."),
]


@pytest.mark.parametrize(("answer", "label", "explanation"), ESNLI_CASES)
def test_esnli(answer: str, label: str | None, explanation: str) -> None:
    assert parse_answer("esnli", answer) == (label, explanation)


@pytest.mark.parametrize(("answer", "label", "explanation"), MEME_CASES)
def test_meme(answer: str, label: str | None, explanation: str) -> None:
    assert parse_answer("meme", answer) == (label, explanation)


@pytest.mark.parametrize(("answer", "label", "explanation"), SHAPES_CASES)
def test_shapes(answer: str, label: str | None, explanation: str) -> None:
    assert parse_answer("shapes", answer) == (label, explanation)


TASK_LABELS = {task: tuple(group_option("task", task).labels) for task in ("esnli", "shapes", "meme")}


@pytest.mark.parametrize(("task", "label"), [(task, label) for task, labels in TASK_LABELS.items() for label in labels])
@pytest.mark.parametrize(
    "wrap",
    ["{}", "{}.", "**{}**", "*{}*", "'{}'", '"{}"', "Answer: {}", "The answer is: {}.", "[/INST] {}</s>", " {}\n"],
)
@pytest.mark.parametrize("case", [str.lower, str.upper, str.title, str.capitalize])
def test_every_label_alone_parses_to_itself(task: str, label: str, wrap: str, case) -> None:
    assert parse_answer(task, wrap.format(case(label))) == (label, "")


@pytest.mark.parametrize(
    "answer",
    [
        "not offensive",
        "This meme is not offensive.",
        "The image isn't offensive.",
        "It is not considered offensive.",
        "Non-offensive.",
        "non offensive",
        "The image is inoffensive.",
        "Nothing about this image is offensive.",
        "This is not at all offensive, it is a cat photo.",
        "I do not find this meme offensive.",
        "It's neither offensive nor hateful.",
    ],
)
def test_not_offensive_never_parses_as_offensive(answer: str) -> None:
    assert parse_answer("meme", answer)[0] == "not offensive"


def test_explanation_is_one_line() -> None:
    answer = "Label: neutral\n\nExplanation:\nThe image shows a man.\nIt does not show\n\nwhere he is going"
    assert parse_answer("esnli", answer) == ("neutral", "The image shows a man. It does not show. Where he is going")


def test_unknown_task_raises_naming_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown task 'vqa'.*esnli.*meme.*shapes"):
        parse_answer("vqa", "entailment")


def test_parse_label_works_for_a_new_label_set() -> None:
    labels = ("positive", "negative")
    assert parse_label(labels, "Negative. The sky is grey and the man frowns.") == (
        "negative",
        "The sky is grey and the man frowns.",
    )
    assert parse_label(labels, "yes") == (None, "Yes")  # no "X / not X" pair: yes/no means nothing
    assert parse_label(labels, "It is not positive.") == (None, "It is not positive.")


def test_parse_label_derives_negation_and_yes_no_for_a_not_x_pair() -> None:
    labels = ["relevant", "not relevant"]  # any sequence; the label comes back as spelled here
    assert parse_label(labels, "The caption isn't relevant to the image.") == ("not relevant", "")
    assert parse_label(labels, "Non-relevant.") == ("not relevant", "")
    assert parse_label(labels, "Yes, it names the dog.") == ("relevant", "It names the dog.")


def test_parse_label_takes_custom_aliases() -> None:
    labels = ("entailment", "contradiction", "neutral")
    assert parse_label(labels, "The image supports the hypothesis.")[0] is None
    assert parse_label(labels, "The image supports the hypothesis.", aliases={"entailment": ["supports"]}) == (
        "entailment",
        "",
    )


def test_parse_label_needs_labels() -> None:
    with pytest.raises(ValueError, match="at least one label"):
        parse_label((), "entailment")
