"""The shipped data files are exactly what `python -m evomerge.miniature.make_data` writes, and the held-out split is
clean: no question twice, none in a fitness or test wording, none repeating a fitness problem's arithmetic."""

from __future__ import annotations

import json
import re

import pytest

from evomerge.core.resources import package_path
from evomerge.miniature import data
from evomerge.miniature.make_data import WITH_SOLUTIONS, ja_math_files, jsonl

FILES = ja_math_files()


@pytest.mark.parametrize("name", sorted(FILES))
def test_each_shipped_file_is_what_make_data_writes(name):
    assert package_path(f"data/{name}").read_text(encoding="utf-8") == jsonl(FILES[name], name in WITH_SOLUTIONS)


def test_the_text_file_is_what_make_data_writes():
    from evomerge.miniature.make_data import fitness_text

    assert package_path("data/ja_math_fitness.txt").read_text(encoding="utf-8") == fitness_text(FILES)


def _text_rows(name: str) -> list[dict]:
    """A worked-problem text file (the quickstart's perplexity fitness) as rows of question and answer."""
    blocks = package_path(f"data/{name}").read_text(encoding="utf-8").strip().split("\n\n")
    return [{"question": b.split("\n")[0].removeprefix("問題: "),
             "answer_number": int(re.search(r"答えは(\d+)です", b).group(1))} for b in blocks]


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in package_path(f"data/{name}").read_text(encoding="utf-8").splitlines()]


def _arithmetic(row: dict) -> tuple:
    """The numbers a problem states and its answer: equal for two problems that ask the same sum in other words."""
    return tuple(sorted(map(int, re.findall(r"\d+", row["question"])))), row["answer_number"]


def _family(question: str) -> set[int]:
    """Which wording families a question fits (template placeholders matched loosely)."""
    found = set()
    for op_templates in data.JA_TEMPLATES.values():
        for family, template in enumerate(op_templates):
            pattern = re.escape(template)
            pattern = re.sub(r"\\\{[a-z]+\\\}", ".+?", pattern)
            if re.fullmatch(pattern, question):
                found.add(family)
    return found


HELD_OUT = ("ja_math_heldout_400.jsonl", "ja_math_heldout_b_400.jsonl", "ja_math_heldout_c_600.jsonl",
            "ja_math_heldout_d_1000.jsonl")


@pytest.mark.parametrize("name", HELD_OUT)
def test_the_held_out_split_is_new_in_its_words_and_its_arithmetic(name):
    held = _rows(name)
    assert len(held) == int(name.rsplit("_", 1)[1].split(".")[0])
    questions = [r["question"] for r in held]
    assert len(set(questions)) == len(questions), "a held-out question appears twice"
    assert all(_family(q) == {data.FAMILY["heldout"]} for q in questions), "a held-out question in another wording"
    assert not set(questions) & {r["question"] for other in FILES if other != name
                                 for r in _rows(other)}, "a held-out question in another file"
    assert len(_text_rows("ja_math_fitness.txt")) == 60
    for fitness_file in ("ja_math_fitness.jsonl", "ja_math_fitness_256.jsonl", "ja_math_fitness.txt"):
        rows = _text_rows(fitness_file) if fitness_file.endswith(".txt") else _rows(fitness_file)
        fitness = {_arithmetic(r) for r in rows}
        repeated = sum(_arithmetic(r) in fitness for r in held)  # a count only: the held-out items stay unread
        assert not repeated, f"{repeated} held-out problems repeat the numbers and answer of one in {fitness_file}"
    assert len({_arithmetic(r) for r in held}) > 250  # and the arithmetic varies


def test_each_later_held_out_draw_repeats_no_arithmetic_of_an_earlier_one():
    """The earlier held-out sets have judged earlier designs of the steering proof; a later one must be new to them."""
    for later in (1, 2, 3):
        earlier = {_arithmetic(r) for name in HELD_OUT[:later] for r in _rows(name)}
        assert not sum(_arithmetic(r) in earlier for r in _rows(HELD_OUT[later])), HELD_OUT[later]  # a count only


def _operation(question: str) -> str:
    """'+', '-' or '*': which operation's wording a question has."""
    for op, templates in data.JA_TEMPLATES.items():
        for template in templates:
            if re.fullmatch(re.sub(r"\\\{[a-z]+\\\}", ".+?", re.escape(template)), question):
                return op
    raise AssertionError("a question in no wording")


def test_the_third_held_out_draw_has_the_fitness_sets_mix_of_operations():
    """The second draw is nearly all sums and differences (the narrow range's held-out products were used up by the
    first); the third draws products from a wider range, so each operation is a fair share again. Counts only."""
    def shares(name):
        ops = [_operation(r["question"]) for r in _rows(name)]
        return {op: ops.count(op) / len(ops) for op in "+-*"}

    assert shares(HELD_OUT[1])["*"] < 0.05  # what the third draw repairs
    fitness, third = shares("ja_math_fitness_256.jsonl"), shares(HELD_OUT[2])
    assert all(0.25 <= third[op] <= 0.42 for op in "+-*"), third
    assert all(abs(third[op] - fitness[op]) < 0.12 for op in "+-*"), (third, fitness)


def test_the_cost_study_fitness_set_has_no_question_twice():
    questions = [r["question"] for r in _rows("ja_math_fitness_256.jsonl")]
    assert len(set(questions)) == 256
    assert all(_family(q) == {data.FAMILY["fitness"]} for q in questions)


def test_the_fourth_held_out_draw_is_new_to_every_file_and_keeps_the_mix_of_operations():
    """Issue 42's draw: none of the arithmetic of any other shipped file (fitness, test, validation, the quickstart's
    text), each operation about a third although the narrow and wide ranges' held-out products are used up."""
    fourth = _rows(HELD_OUT[3])
    later = ("ja_math_heldout_e_1000.jsonl", "ja_math_heldout_f_1000.jsonl",  # made after it (they may repeat it)
             "ja_math_heldout_g_1000.jsonl", "ja_math_heldout_h_1000.jsonl", "ja_math_heldout_i_1000.jsonl",
             "ja_math_heldout_j_1000.jsonl", "ja_math_heldout_k_1000.jsonl", "ja_math_heldout_l_1000.jsonl",
             "ja_math_heldout_m_1000.jsonl")
    others = {_arithmetic(r) for name in FILES if name not in (HELD_OUT[3], *later) for r in _rows(name)}
    others |= {_arithmetic(r) for r in _text_rows("ja_math_fitness.txt")}
    assert not sum(_arithmetic(r) in others for r in fourth)  # a count only
    ops = [_operation(r["question"]) for r in fourth]
    assert all(0.28 <= ops.count(op) / len(ops) <= 0.39 for op in "+-*"), {op: ops.count(op) for op in "+-*"}


def test_the_validation_set_is_held_back_training_problems():
    """The shipped miniature's fitness wording, none of its fitness problems' arithmetic nor any held-out draw's:
    a run's final model chosen on it has seen nothing that judges it."""
    valid = _rows("ja_math_valid_200.jsonl")
    assert len(valid) == 200 and len({r["question"] for r in valid}) == 200
    assert all(_family(r["question"]) == {data.FAMILY["fitness"]} for r in valid)
    fitness = {_arithmetic(r) for r in _rows("ja_math_fitness.jsonl")}
    held = {_arithmetic(r) for name in HELD_OUT for r in _rows(name)}
    assert not sum(_arithmetic(r) in fitness | held for r in valid)
    ops = [_operation(r["question"]) for r in valid]
    assert all(0.25 <= ops.count(op) / len(ops) <= 0.42 for op in "+-*")


def test_a_balanced_draw_keeps_an_operations_share_when_its_numbers_run_short():
    """`ja_math_balanced` draws the operation first: excluding all but a few products still leaves a third of
    products (repeating their arithmetic, never a question); a plain sided draw would all but drop them."""
    products = {(min(a, b), max(a, b), a * b) for a in range(2, 13) for b in range(2, 10)}
    keep = sorted(k for k in products if data.side(k) == "heldout")[:4]
    drawn = data.ja_math_balanced(90, 1, "heldout", exclude=products - set(keep))
    shares = [sum(("×" in p.solution) == (op == "*") and (op == "*" or f" {op} " in p.solution) for p in drawn)
              for op in "+-*"]
    assert all(20 <= n <= 40 for n in shares), shares
    assert {data.arithmetic(p) for p in drawn if "×" in p.solution} <= set(keep)
    assert len({p.question for p in drawn}) == 90
    with pytest.raises(ValueError, match="no \\* problem left"):
        data.ja_math_balanced(200, 1, "heldout", exclude=products)


FIFTH = "ja_math_heldout_e_1000.jsonl"
SIXTH = "ja_math_heldout_f_1000.jsonl"
SEVENTH = "ja_math_heldout_g_1000.jsonl"


def _new_wording_within_the_training_range(name: str, family: str, earlier_files: tuple, new_ops: str) -> None:
    """What the fifth and sixth draws share: 1000 questions, each once and in no other file, all in `family`'s
    wording, none with the arithmetic of a file that trains, searches or validates; the operations in `new_ops` new
    to `earlier_files` too; products only from the narrow range (2-12 x 2-9); each operation about a third."""
    rows = _rows(name)
    questions = [r["question"] for r in rows]
    assert len(rows) == 1000 and len(set(questions)) == 1000
    assert all(_family(q) == {data.FAMILY[family]} for q in questions), "a question in another file's wording"
    assert not set(questions) & {r["question"] for other in FILES if other != name for r in _rows(other)}
    training = {_arithmetic(r) for other in FILES if "heldout" not in other for r in _rows(other)}
    training |= {_arithmetic(r) for r in _text_rows("ja_math_fitness.txt")}
    assert not sum(_arithmetic(r) in training for r in rows)
    earlier = {_arithmetic(r) for other in earlier_files for r in _rows(other)}
    ops = [_operation(q) for q in questions]
    assert not sum(_arithmetic(r) in earlier for r, op in zip(rows, ops) if op in new_ops)
    products = [sorted(map(int, re.findall(r"\d+", r["question"]))) for r, op in zip(rows, ops) if op == "*"]
    assert all(2 <= small <= 9 and 2 <= large <= 12 for small, large in products)
    assert all(0.3 <= ops.count(op) / len(ops) <= 0.37 for op in "+-*"), {op: ops.count(op) for op in "+-*"}


def test_the_fifth_held_out_draw_is_a_new_wording_within_the_training_range():
    """Issue 42's composition test within the training range (bench/composition_fresh.py): a wording of its own, the
    held-out side of the number space, none of the arithmetic of a file that trains, searches or validates; sums and
    differences new to every earlier held-out draw too; products only from the narrow range (2-12 x 2-9), where
    the earlier draws left none unused, so they repeat numbers, never a question. Counts only: the items stay unread."""
    _new_wording_within_the_training_range(FIFTH, "fresh", HELD_OUT, new_ops="+-")
    assert all(data.side(data.arithmetic(p)) == "heldout" for p in data.ja_math_balanced(
        50, 1, "fresh", products="narrow")), "the fresh wording draws from the held-out side"


def test_the_sixth_held_out_draw_is_a_second_new_wording_within_the_training_range():
    """Made after the fifth draw was scored, for a test designed from it: another wording of its own, the held-out
    side, none of the arithmetic of a file that trains, searches or validates, differences new to every earlier
    held-out draw; sums and products repeat earlier held-out numbers (none unused are left), never a question."""
    _new_wording_within_the_training_range(SIXTH, "fresh2", (*HELD_OUT, FIFTH), new_ops="-")


def test_the_seventh_held_out_draw_is_a_third_new_wording_within_the_training_range():
    """Issue 42's repeatability test (bench/repeat_search.py), drawn before any model read it: a third wording of its
    own, the held-out side, none of the arithmetic of a file that trains, searches or validates; its numbers may
    repeat earlier held-out draws' (few are left unused), never a question."""
    _new_wording_within_the_training_range(SEVENTH, "fresh3", (*HELD_OUT, FIFTH, SIXTH), new_ops="")


EIGHTH = "ja_math_heldout_h_1000.jsonl"
WORDINGS = "ja_math_fitness_wordings_64.jsonl"


def test_the_eighth_held_out_draw_is_a_fourth_new_wording_within_the_training_range():
    """Issue 42's second repeatability test (bench/repeat_search.py --arm wordings), drawn before any model read it:
    a wording no fitness file has, the held-out side, none of the arithmetic of a file that trains, searches or
    validates (the six-wording fitness set included)."""
    _new_wording_within_the_training_range(EIGHTH, "fresh4", (*HELD_OUT, FIFTH, SIXTH, SEVENTH), new_ops="")
    assert not any(data.FAMILY["fresh4"] in _family(r["question"]) for r in _rows(WORDINGS))


def test_the_six_wording_fitness_set_trains_on_wordings_never_on_held_out_arithmetic():
    """The wordings arm's fitness: 64 problems, each once, 10 or 11 in each of the six earlier wordings, every one's
    arithmetic on the fitness side of the number space (so no held-out draw shares it), each operation about a
    third, with the worked solutions the likelihood signal reads."""
    rows = _rows(WORDINGS)
    questions = [r["question"] for r in rows]
    assert len(rows) == 64 and len(set(questions)) == 64
    families = [next(iter(_family(q))) for q in questions]
    assert all(len(_family(q)) == 1 for q in questions)
    assert sorted({families.count(f) for f in range(6)}) == [10, 11] and data.FAMILY["fresh4"] not in families
    assert all(data.side(data.arithmetic(data.Problem(r["question"], r["answer_number"], r["solution"])))
               == "fitness" for r in rows)
    held = {_arithmetic(r) for name in FILES if "heldout" in name for r in _rows(name)}
    assert not sum(_arithmetic(r) in held for r in rows)
    ops = [_operation(q) for q in questions]
    assert all(0.25 <= ops.count(op) / len(ops) <= 0.42 for op in "+-*"), {op: ops.count(op) for op in "+-*"}


NINTH = "ja_math_heldout_i_1000.jsonl"
TENTH = "ja_math_heldout_j_1000.jsonl"


def _six_wording_draw(name: str) -> tuple[list[dict], list[str]]:
    """What the ninth and tenth draws share: 1000 questions of no other file, the six-wording fitness set's
    wordings in its mix (not the eighth's), none of the arithmetic of a file that trains, searches or validates,
    products from the narrow range. Returns the rows and their operations."""
    rows = _rows(name)
    questions = [r["question"] for r in rows]
    assert len(rows) == 1000 and len(set(questions)) == 1000
    assert not set(questions) & {r["question"] for other in FILES if other != name for r in _rows(other)}
    families = [next(iter(_family(q))) for q in questions]
    assert all(len(_family(q)) == 1 for q in questions)
    assert all(130 <= families.count(f) <= 190 for f in range(6)) and data.FAMILY["fresh4"] not in families
    training = {_arithmetic(r) for other in FILES if "heldout" not in other for r in _rows(other)}
    training |= {_arithmetic(r) for r in _text_rows("ja_math_fitness.txt")}
    assert not sum(_arithmetic(r) in training for r in rows)
    ops = [_operation(q) for q in questions]
    products = [sorted(map(int, re.findall(r"\d+", r["question"]))) for r, op in zip(rows, ops) if op == "*"]
    assert all(2 <= small <= 9 and 2 <= large <= 12 for small, large in products)
    return rows, ops


def test_the_ninth_held_out_draw_is_worded_like_the_six_wording_fitness_set_and_new_in_its_arithmetic():
    """Issue 42's ninth draw (bench/repeat_search.py --arm wordings-trained), made before any model read it: the
    six-wording fitness set's wordings in its mix, the held-out side, none of the arithmetic of a file that trains,
    searches or validates, no question of another file, each operation about a third, products from the narrow
    range. Counts only: the items stay unread."""
    _, ops = _six_wording_draw(NINTH)
    assert all(0.28 <= ops.count(op) / len(ops) <= 0.39 for op in "+-*"), {op: ops.count(op) for op in "+-*"}


@pytest.mark.parametrize("name", [TENTH, "ja_math_heldout_k_1000.jsonl"])
def test_the_tenth_and_eleventh_held_out_draws_are_drawn_as_the_ninth_and_repeat_none_of_its_questions(name):
    """Issue 42's tenth and eleventh draws (bench/repeat_search.py --arm budget / restarts), each made before any
    model read it: the ninth's wordings, mix, side and exclusions from other seeds; no question of another file, the
    ninth's included. Counts only: the items stay unread."""
    rows, ops = _six_wording_draw(name)
    # products about a quarter: they have the fewest distinct questions, so most of the ninth's repeats were products
    assert 0.25 <= ops.count("*") / len(ops) <= 0.3 and all(0.34 <= ops.count(op) / len(ops) <= 0.39 for op in "+-"), \
        {op: ops.count(op) for op in "+-*"}
    assert [r["question"] for r in rows][:5] != [r["question"] for r in _rows(NINTH)][:5]


def test_the_six_wording_validation_set_is_held_back_training_problems():
    """Issue 42's sixth repeatability test (bench/repeat_validation.py): 500 problems, each once, in the six-wording
    fitness set's wordings, the fitness side of the number space (no held-out draw shares an arithmetic fact with
    it: checked against every held-out file), none of the shipped fitness set's arithmetic, no question of another file, each operation about a third."""
    rows = _rows(VALID_WORDINGS)
    questions = [r["question"] for r in rows]
    assert len(rows) == 500 and len(set(questions)) == 500
    assert not set(questions) & {r["question"] for other in FILES if other != VALID_WORDINGS for r in _rows(other)}
    families = [next(iter(_family(q))) for q in questions]
    assert all(len(_family(q)) == 1 for q in questions)
    assert all(75 <= families.count(f) <= 92 for f in range(6)) and data.FAMILY["fresh4"] not in families
    held = {_arithmetic(r) for name in FILES if "heldout" in name for r in _rows(name)}
    fitness = {_arithmetic(r) for r in _rows("ja_math_fitness.jsonl")}
    assert not sum(_arithmetic(r) in held | fitness for r in rows)
    ops = [_operation(q) for q in questions]
    assert all(0.28 <= ops.count(op) / len(ops) <= 0.39 for op in "+-*"), {op: ops.count(op) for op in "+-*"}


def test_the_twelfth_held_out_draw_is_drawn_as_the_ninth_and_repeats_none_of_its_questions():
    """Issue 42's twelfth draw (bench/repeat_validation.py), made before any model read it: as the tenth and
    eleventh, from another seed, none of the validation set's arithmetic either; products a little under a quarter.
    Counts only: the items stay unread."""
    rows, ops = _six_wording_draw(TWELFTH)
    assert 0.22 <= ops.count("*") / len(ops) <= 0.27 and all(0.35 <= ops.count(op) / len(ops) <= 0.4 for op in "+-"), \
        {op: ops.count(op) for op in "+-*"}
    assert not {_arithmetic(r) for r in rows} & {_arithmetic(r) for r in _rows(VALID_WORDINGS)}


VALID_WORDINGS = "ja_math_valid_wordings_500.jsonl"
TWELFTH = "ja_math_heldout_l_1000.jsonl"


THIRTEENTH = "ja_math_heldout_m_1000.jsonl"


def test_the_thirteenth_held_out_draw_is_drawn_as_the_ninth_and_repeats_none_of_the_earlier_questions():
    """Issue 42's thirteenth draw (bench/repeat_search.py --arm fitness256), made before any model read it: as the
    ninth to twelfth, from another seed, none of the validation sets' or the 256-problem fitness set's arithmetic,
    no question of another file; products about a quarter. Counts only: the items stay unread."""
    rows, ops = _six_wording_draw(THIRTEENTH)
    assert 0.25 <= ops.count("*") / len(ops) <= 0.28 and all(0.35 <= ops.count(op) / len(ops) <= 0.39 for op in "+-"), \
        {op: ops.count(op) for op in "+-*"}
    facts = {_arithmetic(r) for r in rows}
    for training in (VALID_WORDINGS, "ja_math_valid_200.jsonl", "ja_math_fitness_256.jsonl"):
        assert not facts & {_arithmetic(r) for r in _rows(training)}, training
