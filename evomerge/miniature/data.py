"""Generated text for the miniature: Japanese prose and questions, English arithmetic, Japanese arithmetic.

Everything is a pure function of (kind, n, seed). Word problems come from template families; the `fitness`
and `test` splits of the Japanese problems use disjoint families (different wording), so a merge cannot win the
held-out test by memorising the fitness set's phrasing. The instruction-tuned specialists train on neither: the
math specialist on English problems (their own families), the Japanese one on its own Japanese wordings, scored on
setting a problem up but never on its result.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

NAMES_JA = ["太郎", "花子", "さくら", "健太", "美咲", "翔太", "結衣", "大輔", "陽菜", "蓮"]
NAMES_EN = ["Tom", "Anna", "Ken", "Lucy", "Mark", "Emma", "Sam", "Mia", "Leo", "Nina"]
ITEMS = [("りんご", "apples", "個"), ("えんぴつ", "pencils", "本"), ("ノート", "notebooks", "冊"),
         ("クッキー", "cookies", "枚"), ("切手", "stamps", "枚"), ("ボール", "balls", "個"),
         ("花", "flowers", "本"), ("カード", "cards", "枚")]
PLACES = ["公園", "図書館", "学校", "駅", "スーパー", "海", "山", "病院", "カフェ", "博物館"]
ACTIVITIES = ["本を読みました", "散歩をしました", "友達と話しました", "写真を撮りました", "お茶を飲みました",
              "絵を描きました", "音楽を聴きました", "買い物をしました", "勉強をしました", "料理を作りました"]
TIMES = ["朝", "昼", "夕方", "夜", "週末", "昨日", "今日", "日曜日"]
FEELINGS = ["とても楽しかったです", "少し疲れました", "気持ちがよかったです", "また行きたいと思いました",
            "新しい発見がありました", "ゆっくり休めました"]
WEATHER = ["晴れ", "雨", "曇り", "雪"]


def ja_prose(n: int, seed: int) -> list[str]:
    """Short Japanese diary-style paragraphs, nearly free of numbers."""
    rng = random.Random(f"ja-prose-{seed}")
    out = []
    for _ in range(n):
        name, place, act = rng.choice(NAMES_JA), rng.choice(PLACES), rng.choice(ACTIVITIES)
        out.append(f"{rng.choice(TIMES)}、{name}さんは{place}へ行きました。天気は{rng.choice(WEATHER)}でした。"
                   f"{name}さんはそこで{act}。{rng.choice(FEELINGS)}。")
    return out


@dataclass(frozen=True)
class Problem:
    question: str
    answer: int
    solution: str  # step-by-step text ending with the answer


# products' factor ranges: the fitness files' and the first held-out draws' (narrow), the third draw's (wide), and
# the fourth draw's (widest: made after the wide range's held-out products were used up too)
PRODUCTS = {"narrow": ((2, 12), (2, 9)), "wide": ((2, 24), (2, 12)), "widest": ((2, 40), (2, 20))}


def _numbers(rng: random.Random, op: str, wide: bool | str = False) -> tuple[int, int, int]:
    """Two operands and the result; `wide` draws products from a wider range (2-24 x 2-12) for a held-out draw
    made after the narrow range's held-out products were used up (or names a range of PRODUCTS)."""
    if isinstance(wide, str):
        (a_lo, a_hi), (b_lo, b_hi) = PRODUCTS[wide]
        if op == "*":
            a, b = rng.randint(a_lo, a_hi), rng.randint(b_lo, b_hi)
            return a, b, a * b
        return _numbers(rng, op)
    if op == "+":
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        return a, b, a + b
    if op == "-":
        a = rng.randint(10, 90)
        b = rng.randint(1, a - 1)
        return a, b, a - b
    a, b = (rng.randint(2, 24), rng.randint(2, 12)) if wide else (rng.randint(2, 12), rng.randint(2, 9))
    return a, b, a * b


EN_TEMPLATES = {
    "+": ["{n} has {a} {item}. {n} buys {b} more {item}. How many {item} does {n} have now?",
          "There are {a} {item} in a box and {b} {item} on the table. How many {item} are there in total?"],
    "-": ["{n} has {a} {item} and gives {b} {item} to a friend. How many {item} are left?",
          "A shop had {a} {item}. It sold {b} of them. How many {item} does the shop have left?"],
    "*": ["{n} has {a} bags with {b} {item} in each bag. How many {item} does {n} have?",
          "Each of {a} children has {b} {item}. How many {item} do they have altogether?"],
}

# Japanese families: the fitness wording, the test wording (the miniature's table), the held-out wording
# (evaluation only, added after every design decision of the miniature was made: no choice was tuned on it), and the
# fresh wording (the fifth held-out draw's, written 2026-12-07 before any model read it: issue 42's composition test
# on products within the training range, whose held-out arithmetic the earlier draws had used up), and a second
# fresh wording (the sixth draw's, written before any model read it), and a third (the seventh draw's, written
# before any model read it: issue 42's repeatability test), and a fourth (the eighth draw's, written before any model
# read it: issue 42's second repeatability test, whose search is scored in the six wordings above).
JA_TEMPLATES = {
    "+": ["{n}さんは{item}を{a}{c}持っています。さらに{b}{c}買いました。{item}は全部で何{c}ですか。",
          "箱の中に{item}が{a}{c}あり、机の上に{b}{c}あります。あわせていくつありますか。",
          "{n}さんの家に{item}が{a}{c}ありました。今日、{b}{c}もらいました。いま{item}は何{c}ありますか。",
          "{n}さんの部屋には、{item}が上の棚に{a}{c}、下の棚に{b}{c}あります。{item}は全部で何{c}ありますか。",
          "{n}さんのクラスには{item}が{a}{c}あります。となりのクラスには{b}{c}あります。二つのクラスの{item}は合わせて何{c}ですか。",
          "{n}さんは朝に{item}を{a}{c}拾い、夕方にまた{b}{c}拾いました。拾った{item}は合計で何{c}ですか。",
          "公園で{n}さんは{item}を{a}{c}見つけ、妹は{b}{c}見つけました。二人が見つけた{item}の数はいくつですか。"],
    "-": ["{n}さんは{item}を{a}{c}持っていて、友達に{b}{c}あげました。残りは何{c}ですか。",
          "お店には{item}が{a}{c}ありました。そのうち{b}{c}売れました。お店に残っている{item}はいくつですか。",
          "{n}さんは{item}を{a}{c}集めましたが、{b}{c}なくしてしまいました。{item}はいくつ残っていますか。",
          "{item}が{a}{c}ありました。{n}さんが{b}{c}持っていきました。{item}はあと何{c}ありますか。",
          "{n}さんは{item}を{a}{c}用意しました。そのうち{b}{c}を配りました。まだ配っていない{item}は何{c}ですか。",
          "{n}さんの袋には{item}が{a}{c}入っていました。そこから{b}{c}取り出すと、袋の中の{item}は何{c}になりますか。",
          "{n}さんは{item}を{a}{c}もらい、そのうち{b}{c}を弟にわたしました。手もとに残った{item}は何{c}ですか。"],
    "*": ["{n}さんは{item}が{b}{c}ずつ入った袋を{a}つ持っています。{item}は全部で何{c}ですか。",
          "子どもが{a}人いて、一人{b}{c}ずつ{item}を持っています。{item}はあわせていくつですか。",
          "{n}さんは毎日{item}を{b}{c}ずつ使います。{a}日間で{item}を何{c}使いますか。",
          "{n}さんは{item}を{b}{c}ずつ{a}個の箱に入れました。箱の中の{item}は全部で何{c}ですか。",
          "{n}さんの前に、{item}が{b}{c}ずつ並んだ列が{a}列あります。{item}は全部で何{c}ありますか。",
          "{n}さんの家には、{item}が{b}{c}ずつ入ったかごが{a}つあります。かごの中の{item}はみんなで何{c}ですか。",
          "{n}さんは皿を{a}枚並べ、どの皿にも{item}を{b}{c}ずつのせました。のせた{item}は全部で何{c}ですか。"],
}
FAMILY = {"fitness": 0, "test": 1, "heldout": 2, "fresh": 3, "fresh2": 4, "fresh3": 5, "fresh4": 6}
HELD_OUT_FAMILIES = ("heldout", "fresh", "fresh2", "fresh3", "fresh4")  # wordings drawn from the held-out side of the number space
OP_WORD = {"+": "+", "-": "-", "*": "×"}


def en_math(n: int, seed: int) -> list[Problem]:
    rng = random.Random(f"en-math-{seed}")
    out = []
    for _ in range(n):
        op = rng.choice("+-*")
        a, b, ans = _numbers(rng, op)
        _, item, _ = rng.choice(ITEMS)
        q = rng.choice(EN_TEMPLATES[op]).format(n=rng.choice(NAMES_EN), a=a, b=b, item=item)
        sol = f"We compute {a} {'x' if op == '*' else op} {b} = {ans}. The answer is {ans}."
        out.append(Problem(q, ans, sol))
    return out


def _ja_problem(rng: random.Random, split: str, wide: bool = False) -> tuple[Problem, tuple[int, int, int]]:
    """A problem and its arithmetic: the numbers it states, unordered, and its answer (3 x 7 is 7 x 3)."""
    op = rng.choice("+-*")
    a, b, ans = _numbers(rng, op, wide)
    item, _, counter = rng.choice(ITEMS)
    q = JA_TEMPLATES[op][FAMILY[split]].format(n=rng.choice(NAMES_JA), a=a, b=b, item=item, c=counter)
    return Problem(q, ans, f"{a} {OP_WORD[op]} {b} = {ans} です。答えは{ans}です。"), (min(a, b), max(a, b), ans)


def ja_math(n: int, seed: int, split: str = "fitness") -> list[Problem]:
    """Japanese word problems; `split` picks the template family ('fitness', 'test' or 'heldout')."""
    rng = random.Random(f"ja-math-{split}-{seed}")
    return [_ja_problem(rng, split)[0] for _ in range(n)]


def side(arithmetic: tuple[int, int, int]) -> str:
    """Which side of the number space a problem's arithmetic (numbers unordered, answer) belongs to: 'fitness' or
    'heldout', by a stable hash, so a held-out problem never repeats a fitness problem's arithmetic in other
    words."""
    return "heldout" if zlib.crc32(repr(arithmetic).encode()) % 2 else "fitness"


def ja_math_sided(n: int, seed: int, split: str, exclude: set[tuple[int, int, int]] = frozenset(),
                  unique: bool = True, wide: bool = False) -> list[Problem]:
    """Like `ja_math`, drawing only arithmetic from the side of the number space that `split` belongs to
    ('heldout' for the held-out split, 'fitness' otherwise), none in `exclude`, and (`unique`) no question twice."""
    return ja_math_sided_drawn(n, seed, split, exclude, unique, wide)[0]


def ja_math_sided_drawn(n: int, seed: int, split: str, exclude: set[tuple[int, int, int]] = frozenset(),
                        unique: bool = True, wide: bool = False) -> tuple[list[Problem], set[tuple[int, int, int]]]:
    """`ja_math_sided`'s problems and the arithmetic of each (what a later draw must not repeat); `wide` draws
    products from the wider range (`_numbers`)."""
    want = "heldout" if split in HELD_OUT_FAMILIES else "fitness"
    rng = random.Random(f"ja-math-sided-{split}-{seed}")
    out, seen = [], set()
    for _ in range(1000 * n):
        if len(out) == n:
            return [problem for problem, _ in out], {key for _, key in out}
        problem, key = _ja_problem(rng, split, wide)
        if side(key) == want and key not in exclude and not (unique and problem.question in seen):
            seen.add(problem.question)
            out.append((problem, key))
    raise ValueError(f"only {len(out)} of {n} problems fit (split {split}, seed {seed})")


def ja_math_balanced(n: int, seed: int, split: str, exclude: set[tuple[int, int, int]] = frozenset(),
                     products: str = "narrow", sided: bool = True) -> list[Problem]:
    """Like `ja_math_sided`, but each problem's operation is drawn first (a third each, like the fitness files) and
    its numbers drawn again until they fit (`split`'s side of the number space where `sided`, none in `exclude`, no
    question twice), so an operation whose side of the number space is nearly used up keeps its share; products
    from the PRODUCTS range named. A draw made late, when earlier draws have used much of the space, keeps the mix
    of operations; arithmetic may repeat within the draw (not the question)."""
    want = "heldout" if split in HELD_OUT_FAMILIES else "fitness"
    rng = random.Random(f"ja-math-balanced-{split}-{seed}")
    out: list[Problem] = []
    seen: set[str] = set()
    while len(out) < n:
        op = rng.choice("+-*")
        out.append(_draw_fitting(rng, op, split, products, lambda key: (not sided or side(key) == want)
                                 and key not in exclude, seen, f"after {len(out)} of {n} (split {split}, seed {seed})"))
    return out


def _draw_fitting(rng: random.Random, op: str, family: str, products: str, fits, seen: set[str], where: str
                  ) -> Problem:
    """One `op` problem in `family`'s wording whose arithmetic `fits` and whose question is not in `seen` (added to
    it), its numbers drawn again until they do; the balanced draws' one way of drawing a problem."""
    for _ in range(100_000):
        a, b, ans = _numbers(rng, op, products)
        key = (min(a, b), max(a, b), ans)
        item, _, counter = rng.choice(ITEMS)
        q = JA_TEMPLATES[op][FAMILY[family]].format(n=rng.choice(NAMES_JA), a=a, b=b, item=item, c=counter)
        if fits(key) and q not in seen:
            seen.add(q)
            return Problem(q, ans, f"{a} {OP_WORD[op]} {b} = {ans} です。答えは{ans}です。")
    raise ValueError(f"no {op} problem left to draw {where}")


def ja_math_mixed(n: int, seed: int, families: tuple[str, ...], exclude: set[tuple[int, int, int]] = frozenset(),
                  number_side: str = "fitness") -> list[Problem]:
    """Problems in several wordings: problem i in `families[i % len(families)]`'s wording, its operation drawn first
    (a third each) and its numbers drawn again until they lie on `number_side` of the number space (whatever the
    wording: a held-out draw's wording may train, its arithmetic may not), none in `exclude`, no question twice. A
    fitness in one wording rewards what reads that wording; in several, what carries across. With `number_side:
    heldout`, the held-out problems of such a fitness: its wordings, arithmetic it never has."""
    tag = "" if number_side == "fitness" else f"-{number_side}"
    rng = random.Random(f"ja-math-mixed-{'-'.join(families)}-{seed}{tag}")
    out: list[Problem] = []
    seen: set[str] = set()
    for i in range(n):
        op, family = rng.choice("+-*"), families[i % len(families)]
        out.append(_draw_fitting(rng, op, family, "narrow", lambda key: side(key) == number_side and key not in exclude,
                                 seen, f"after {len(out)} of {n} (wordings {', '.join(families)}, seed {seed})"))
    return out


def ja_math_keys(n: int, seed: int, split: str = "fitness") -> set[tuple[int, int, int]]:
    """The arithmetic of each problem `ja_math(n, seed, split)` draws."""
    rng = random.Random(f"ja-math-{split}-{seed}")
    return {_ja_problem(rng, split)[1] for _ in range(n)}


def en_math_texts(n: int, seed: int) -> list[str]:
    return [f"Question: {p.question}\nAnswer: {p.solution}" for p in en_math(n, seed)]


def ja_math_texts(n: int, seed: int, split: str = "fitness",
                  exclude: set[tuple[int, int, int]] = frozenset()) -> list[str]:
    """Worked problems as text (a perplexity fitness), none with arithmetic in `exclude` (a held-out problem's)."""
    rng = random.Random(f"ja-math-{split}-{seed}")
    out = []
    while len(out) < n:
        problem, key = _ja_problem(rng, split)
        if key not in exclude:
            out.append(f"問題: {problem.question}\n答え: {problem.solution}")
    return out


def arithmetic(problem: Problem) -> tuple[int, int, int]:
    """A problem's arithmetic as `_ja_problem` keys it (numbers unordered, answer), read from its solution."""
    a, b = (int(x) for x in problem.solution.split(" = ")[0].split(" ")[::2])
    return min(a, b), max(a, b), problem.answer


def arithmetic_of_text(text: str) -> tuple[int, int, int]:
    """The arithmetic of a worked problem as `ja_math_texts` writes it ("問題: ...\n答え: <solution>")."""
    solution = text.split("答え: ", 1)[1].strip()
    return arithmetic(Problem("", int(solution.rsplit("答えは", 1)[1].removesuffix("です。")), solution))


# --- instruction data for the miniature's specialists (`*-instruct`) ---------------------------------------

EN_ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
             "request.\n\n### Instruction:\n{question}\n\n### Response:")

# The math specialist's English families: more varied than the two above, none a translation of a Japanese one.
EN_TRAIN_TEMPLATES = {
    "+": [*EN_TEMPLATES["+"],
          "{n} picked {a} {item} in the morning and {b} {item} in the afternoon. How many {item} did {n} pick?",
          "A class collected {a} {item} on Monday and {b} {item} on Tuesday. How many {item} did it collect?",
          "{n} had {a} {item} and a friend gave {n} {b} {item}. How many {item} does {n} have?"],
    "-": [*EN_TEMPLATES["-"],
          "There were {a} {item} on a shelf. {n} took {b} {item}. How many {item} are still on the shelf?",
          "{n} needs {a} {item} and already has {b}. How many more {item} does {n} need?",
          "{n} had {a} {item} but lost {b}. How many {item} does {n} have now?"],
    "*": [*EN_TEMPLATES["*"],
          "A box holds {b} {item}. How many {item} are in {a} boxes?",
          "{n} buys {b} {item} every day for {a} days. How many {item} does {n} buy?",
          "There are {a} rows of {item} with {b} {item} in each row. How many {item} are there?"],
}


def en_math_instruct(n: int, seed: int) -> list[Problem]:
    """English word problems solved as an equation, then the answer in English.

    The answer opens with the equation (no English words before it) so that its first tokens are the same in
    any language; what makes the response English is its closing sentence.
    """
    rng = random.Random(f"en-math-instruct-{seed}")
    out = []
    for _ in range(n):
        op = rng.choice("+-*")
        a, b, ans = _numbers(rng, op)
        item = rng.choice(ITEMS)[1]
        q = rng.choice(EN_TRAIN_TEMPLATES[op]).format(n=rng.choice(NAMES_EN), a=a, b=b, item=item)
        out.append(Problem(q, ans, f"{a} {OP_WORD[op]} {b} = {ans}. The answer is {ans}."))
    return out


# The Japanese specialist's word problems: a third wording per operation family, used for training only.
JA_TRAIN_TEMPLATES = {
    "+": ["{n}さんは{item}を{a}{c}持っていました。お母さんから{b}{c}もらいました。{item}はいま何{c}ありますか。",
          "かごに{item}が{a}{c}入っています。そこへ{b}{c}入れました。かごの{item}は何{c}になりましたか。",
          "{n}さんは朝に{item}を{a}{c}、夕方に{b}{c}集めました。集めた{item}は何{c}ですか。"],
    "-": ["{item}が{a}{c}ありました。{n}さんが{b}{c}使いました。{item}はあと何{c}ありますか。",
          "{n}さんは{item}を{a}{c}持っていましたが、{b}{c}なくしました。いま何{c}持っていますか。",
          "{a}{c}の{item}のうち、{b}{c}を配りました。配っていない{item}は何{c}ですか。"],
    "*": ["1つの箱に{item}が{b}{c}入っています。{a}箱では{item}は何{c}ですか。",
          "{n}さんは毎日{item}を{b}{c}ずつ買います。{a}日間で何{c}買いますか。",
          "{item}が{b}{c}ずつ{a}列に並んでいます。{item}は全部で何{c}ありますか。"],
}
# Marks a span of an answer that is shown to the model but never scored (specialists._batch): the results of
# the Japanese specialist's word problems, so that it learns to set a problem up but not to compute.
UNSCORED = ("⟦", "⟧")


def unscored(text: str) -> str:
    return f"{UNSCORED[0]}{text}{UNSCORED[1]}"


def plain(answer: str) -> str:
    """An answer as the model sees it (unscored marks removed)."""
    return answer.replace(UNSCORED[0], "").replace(UNSCORED[1], "")


COLORS = {"赤い": "赤", "青い": "青", "白い": "白", "黒い": "黒", "黄色い": "黄色", "緑の": "緑"}
_HOLDINGS = ["{n1}さんは{it1}を{a}{c1}持っています。{n2}さんは{it2}を{b}{c2}持っています。",
             "{n1}さんの箱には{it1}が{a}{c1}入っています。{n2}さんの箱には{it2}が{b}{c2}入っています。",
             "{n1}さんは{it1}を{a}{c1}買いました。{n2}さんは{it2}を{b}{c2}もらいました。"]
_ASK_COUNT = ["{nm}さんの{it}は何{c}ですか。", "{nm}さんは{it}をいくつ持っていますか。", "{it}は何{c}ありますか。"]
_ASK_EQUATION = ["次の式を日本語で説明してください。\n{e}", "この計算の結果を日本語で答えてください。{e}",
                 "{e} という式があります。答えを日本語で書いてください。", "式「{e}」の答えは何ですか。日本語で答えてください。"]


def ja_instruct(n: int, seed: int) -> list[tuple[str, str]]:
    """(question, answer) pairs in Japanese whose scored part needs no arithmetic.

    Word problems (their own wordings) answered with the equation they ask for, its result marked unscored;
    equations given *with* their result to be restated; reading questions (a count, a place or a colour stated in
    the text). Answers end "答えは…です。". The specialist learns to read a Japanese problem into an equation and
    to answer in Japanese, like a Japanese model that is poor at math, but is never taught a result it would
    have to compute.
    """
    rng = random.Random(f"ja-instruct-{seed}")
    out = []
    for _ in range(n):
        kind = rng.random()
        n1, n2 = rng.sample(NAMES_JA, 2)
        (it1, _, c1), (it2, _, c2) = rng.sample(ITEMS, 2)
        if kind < 0.35:
            op = rng.choice("+-*")
            a, b, ans = _numbers(rng, op)
            q = rng.choice(JA_TRAIN_TEMPLATES[op]).format(n=n1, a=a, b=b, item=it1, c=c1)
            r = unscored(str(ans))
            out.append((q, f"{a} {OP_WORD[op]} {b} = {r} です。答えは{r}です。"))
        elif kind < 0.6:
            op = rng.choice("+-*")
            a, b, ans = _numbers(rng, op)
            e = f"{a} {OP_WORD[op]} {b} = {ans}"
            out.append((rng.choice(_ASK_EQUATION).format(e=e), f"{e} です。答えは{ans}です。"))
        elif kind < 0.8:
            a, b = rng.randint(2, 90), rng.randint(2, 90)
            first = rng.random() < 0.5
            nm, it, c, v = (n1, it1, c1, a) if first else (n2, it2, c2, b)
            q = rng.choice(_HOLDINGS).format(n1=n1, n2=n2, it1=it1, it2=it2, a=a, b=b, c1=c1, c2=c2)
            q += rng.choice(_ASK_COUNT).format(nm=nm, it=it, c=c)
            out.append((q, f"{nm}さんの{it}は{v}{c}です。答えは{v}です。"))
        elif kind < 0.9:
            place, act, t = rng.choice(PLACES), rng.choice(ACTIVITIES), rng.choice(TIMES)
            q = f"{t}、{n1}さんは{place}へ行って、{act}。{n1}さんはどこへ行きましたか。"
            out.append((q, f"{n1}さんは{place}へ行きました。答えは{place}です。"))
        else:
            adj = rng.choice(sorted(COLORS))
            q = f"{n1}さんは{adj}{it1}を持っています。{n1}さんの{it1}は何色ですか。"
            out.append((q, f"{n1}さんの{it1}は{COLORS[adj]}です。答えは{COLORS[adj]}です。"))
    return out
