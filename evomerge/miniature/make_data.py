"""Regenerate the small data files under evaluators/data (deterministic): python -m evomerge.miniature.make_data"""

from __future__ import annotations

import json
from pathlib import Path

from evomerge.miniature import data

ROOT = Path(__file__).resolve().parents[1] / "data"  # evomerge/data, shipped with the package


COLORS = [("赤", "赤い", (220, 30, 30)), ("青", "青い", (30, 60, 220)), ("緑", "緑の", (30, 160, 60)),
          ("黄色", "黄色い", (230, 200, 20))]  # (colour, its attributive form, RGB)
SHAPES = ["丸", "四角", "三角"]


def tiny_vqa(folder: Path) -> None:
    """Twelve drawn shapes with Japanese QAs in the JA-VG-VQA layout (image, qas), for the offline VLM search."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(12):
        (color, adj, rgb), shape = COLORS[i % 4], SHAPES[i % 3]
        im = Image.new("RGB", (64, 64), (245, 245, 245))
        draw = ImageDraw.Draw(im)
        box = (12, 12, 52, 52)
        if shape == "丸":
            draw.ellipse(box, fill=rgb)
        elif shape == "四角":
            draw.rectangle(box, fill=rgb)
        else:
            draw.polygon([(32, 10), (54, 52), (10, 52)], fill=rgb)
        name = f"shape{i:02d}.png"
        im.save(folder / name, optimize=True)
        rows.append({"image": name, "qas": [
            {"question": "この画像には何が描かれていますか？", "answer": f"{adj}{shape}が描かれています。"},
            {"question": "図形の色は何ですか？", "answer": f"{color}です。"}]})
    (folder / "qas.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n",
                                      encoding="utf-8")


def main() -> None:
    ROOT.mkdir(parents=True, exist_ok=True)
    (ROOT / "ja_math_fitness.txt").write_text("\n\n".join(data.ja_math_texts(60, seed=100, split="fitness")) + "\n",
                                              encoding="utf-8")
    for split, n, seed in (("fitness", 64, 200), ("test", 100, 300)):
        rows = [{"question": p.question, "answer_number": p.answer} for p in data.ja_math(n, seed, split)]
        (ROOT / f"ja_math_{split}.jsonl").write_text(
            "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    tiny_vqa(ROOT / "ja_vqa_tiny")
    print(f"wrote data files in {ROOT}")


if __name__ == "__main__":
    main()
