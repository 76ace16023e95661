"""Generated text for the miniature: Japanese prose, English arithmetic, Japanese arithmetic.

Everything is a pure function of (kind, n, seed). Word problems come from template families; the `fitness`
and `test` splits of the Japanese problems use disjoint families (different wording), so a merge cannot win the
held-out test by memorising the fitness set's phrasing.
"""

from __future__ import annotations

import random
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


def _numbers(rng: random.Random, op: str) -> tuple[int, int, int]:
    if op == "+":
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        return a, b, a + b
    if op == "-":
        a = rng.randint(10, 90)
        b = rng.randint(1, a - 1)
        return a, b, a - b
    a, b = rng.randint(2, 12), rng.randint(2, 9)
    return a, b, a * b


EN_TEMPLATES = {
    "+": ["{n} has {a} {item}. {n} buys {b} more {item}. How many {item} does {n} have now?",
          "There are {a} {item} in a box and {b} {item} on the table. How many {item} are there in total?"],
    "-": ["{n} has {a} {item} and gives {b} {item} to a friend. How many {item} are left?",
          "A shop had {a} {item}. It sold {b} of them. How many {item} does the shop have left?"],
    "*": ["{n} has {a} bags with {b} {item} in each bag. How many {item} does {n} have?",
          "Each of {a} children has {b} {item}. How many {item} do they have altogether?"],
}

# Japanese families: the first of each list is the fitness wording, the second the held-out test wording.
JA_TEMPLATES = {
    "+": ["{n}さんは{item}を{a}{c}持っています。さらに{b}{c}買いました。{item}は全部で何{c}ですか。",
          "箱の中に{item}が{a}{c}あり、机の上に{b}{c}あります。あわせていくつありますか。"],
    "-": ["{n}さんは{item}を{a}{c}持っていて、友達に{b}{c}あげました。残りは何{c}ですか。",
          "お店には{item}が{a}{c}ありました。そのうち{b}{c}売れました。お店に残っている{item}はいくつですか。"],
    "*": ["{n}さんは{item}が{b}{c}ずつ入った袋を{a}つ持っています。{item}は全部で何{c}ですか。",
          "子どもが{a}人いて、一人{b}{c}ずつ{item}を持っています。{item}はあわせていくつですか。"],
}
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


def ja_math(n: int, seed: int, split: str = "fitness") -> list[Problem]:
    """Japanese word problems; `split` picks the template family ('fitness' or 'test')."""
    family = {"fitness": 0, "test": 1}[split]
    rng = random.Random(f"ja-math-{split}-{seed}")
    out = []
    for _ in range(n):
        op = rng.choice("+-*")
        a, b, ans = _numbers(rng, op)
        item, _, counter = rng.choice(ITEMS)
        q = JA_TEMPLATES[op][family].format(n=rng.choice(NAMES_JA), a=a, b=b, item=item, c=counter)
        sol = f"{a} {OP_WORD[op]} {b} = {ans} です。答えは{ans}です。"
        out.append(Problem(q, ans, sol))
    return out


def en_math_texts(n: int, seed: int) -> list[str]:
    return [f"Question: {p.question}\nAnswer: {p.solution}" for p in en_math(n, seed)]


def ja_math_texts(n: int, seed: int, split: str = "fitness") -> list[str]:
    return [f"問題: {p.question}\n答え: {p.solution}" for p in ja_math(n, seed, split)]
