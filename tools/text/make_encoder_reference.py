#!/usr/bin/env python3
"""Writes tests/text/testdata/minilm_reference.json: the parity reference for Choir's C++
all-MiniLM-L6-v2 encoder (models/text/), computed with the real Hugging Face stack.

For each of ~240 deterministic, varied texts it records the token ids of the Hugging Face
tokenizer (AutoTokenizer, i.e. BertTokenizerFast, truncation at 256) and the sentence embedding
of the sentence-transformers recipe (AutoModel, mean pooling over the attention mask, L2
normalisation), rounded to 6 decimals.

  /usr/bin/python3 tools/text/make_encoder_reference.py [--model-dir DIR] [--out FILE]

Needs torch and transformers (Debian: apt-get install python3-torch; PyPI:
pip install --user transformers==4.40.2). See docs/encoder.md.
"""
import argparse
import json
import os
import random

import torch
import transformers
from transformers import AutoModel, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAX_LENGTH = 256


def make_texts():
    """~240 texts, the same on every run."""
    rng = random.Random(20240611)
    texts = [
        "",
        " ",
        "   \t\n  ",
        "\n",
        "Hello, world!",
        "hello world",
        "HELLO WORLD",
        "HeLLo WoRLD",
        "Crème brûlée",
        "café naïve façade résumé coöperate",
        "Ångström, Øresund, Straße, Œuvre, Æsir",
        "Zoë Saldaña and Beyoncé went to São Paulo.",
        "ÀÁÂÃÄÅ àáâãäå ÈÉÊË èéêë ÌÍÎÏ ìíîï",
        "İstanbul ıĞğŞş",
        "ΑΒΓ αβγ Ελληνικά ΣΊΣΥΦΟΣ σίσυφος",
        "Привет, как дела? Москва ЁЖИК",
        "مرحبا بالعالم",
        "שלום עולם",
        "नमस्ते दुनिया",
        "สวัสดีชาวโลก",
        "안녕하세요 세계",
        "我喜欢猫",
        "我喜欢猫和狗。你呢？",
        "東京タワーに行きました",
        "ひらがな カタカナ 漢字",
        "中文English混合text测试123",
        "𠀀𠀁 rare CJK extension B",
        "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
        "I love cats 😀😃😄",
        "🥲🫠🧑‍💻 newer emoji",
        "👍🏽 thumbs up with skin tone",
        "❤️ heart with variation selector",
        "🇫🇷 flag",
        "3.14159 is pi, 2.71828 is e",
        "Call 555-1234 or +1 (800) 123-4567",
        "Order #12345 shipped on 2024-06-11 at 10:30am",
        "100% of $20 is $20; 50% is $10.",
        "1,000,000 users; 0.001 error; 1e-12 epsilon",
        "x^2 + y^2 = z^2 <=> a|b & c~d `code` {braces} [brackets] (parens)",
        "email@example.com https://www.example.com/path?q=1&r=2#frag",
        "Don't stop-believing... it's \"fine\" -- really?!",
        "«Guillemets» „Anführungszeichen“ ‘single’ “double”",
        "Em—dash en–dash ellipsis… bullet • section § pilcrow ¶",
        "¿Qué tal? ¡Muy bien!",
        "tab\tseparated\tvalues",
        "line one\nline two\r\nline three",
        "control\x00chars\x01here\x07and\x1bescape",
        "zero\u200bwidth\u200cjoiners\u200d",
        "soft\u00adhyphen",
        "no\u00a0break\u2003em\u3000ideographic space",
        "line\u2028separator\u2029paragraph",
        "replacement \ufffd char",
        "private use \ue000\uf8ff",
        "BOM \ufeffat start",
        "combining: e\u0301 a\u0308 n\u0303 o\u0302",
        "ﬁ ligature ﬂ and ™ ℃ ½ ²",
        "Kelvin \u212a Angstrom \u212b Ohm \u2126",
        "a" * 99,
        "b" * 100,
        "c" * 101,
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
        "pneumonoultramicroscopicsilicovolcanoconiosis",
        "unbelievably unaffordable misunderstandings",
        "The quick brown fox jumps over the lazy dog.",
        "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG!!!",
        "[CLS] [SEP] [UNK] [PAD] [MASK] special tokens as text",
        "##hash ##tags #hashtag @mention",
        "C++17, C#, F#, .NET, Node.js, Objective-C",
        "snake_case camelCase PascalCase kebab-case SCREAMING_CASE",
        "... --- !!! ??? ;;; ::: ,,,",
        "a.b.c.d e,f,g h;i;j",
        "😀",
        "?",
        "a",
        "I",
        "0",
    ]
    # Profile-like English texts after DESIGN.md 1.1.
    ages = ["19", "24", "31", "38", "45", "52", "67"]
    genders = ["female", "male", "young woman", "young man", "retired woman", "father"]
    cities = ["a tier-1 city", "a tier-2 city", "a small town", "a coastal city",
              "a university district", "the suburbs"]
    cats = ["Women's Clothing", "Mobile Phones", "Baby & Maternity", "Home Appliances",
            "Beauty & Skincare", "Outdoor Sports", "Books", "Snacks & Beverages",
            "Pet Supplies", "Computer Accessories", "Kitchenware", "Toys & Games",
            "Men's Shoes", "Jewelry", "Furniture", "Health Supplements"]
    leaves = ["dresses", "phone cases", "diapers", "air fryers", "face serum", "hiking boots",
              "sci-fi novels", "green tea", "cat litter", "mechanical keyboards", "woks",
              "building blocks", "running shoes", "silver earrings", "standing desks",
              "vitamin D"]
    styles = ["value-conscious, compares prices carefully",
              "quality first, buys premium brands",
              "impulse buyer during flash sales",
              "practical; prefers durable, well-reviewed items",
              "trend-driven and fashion-forward",
              "eco-minded, favours sustainable products"]
    for i in range(100):
        a, g, c = rng.choice(ages), rng.choice(genders), rng.choice(cities)
        c1, c2, c3 = rng.sample(range(len(cats)), 3)
        text = (f"Core identity: a {a}-year-old {g} living in {c}. "
                f"Primary interests: {cats[c1]} ({leaves[c1]} - {rng.randint(1, 40)} - "
                f"{rng.random():.2f}); secondary: {cats[c2]} ({leaves[c2]}). "
                f"Recent: {cats[c3]} ({leaves[c3]} - {rng.randint(1, 9)}). "
                f"Consumption philosophy: {rng.choice(styles)}.")
        if i % 10 == 3:
            text = text.upper()
        if i % 10 == 7:
            text = text.lower()
        if i % 17 == 5:
            text = f"{text} Searches: “{leaves[c1]} 2024”, ‘{leaves[c2]} sale’ 🛒"
        texts.append(text)
    # Random mixtures of words, symbols, accents, CJK and emoji.
    pieces = ["cat", "Dog", "naïve", "ÉLAN", "42", "3.5", "#1", "€9,99", "—", "…", "!",
              "中国", "日本語", "한국어", "🙂", "🚀", "x²", "µm", "Ω", "ß", "ﬁ", "\t", "  ",
              "it's", "e-mail", "U.S.A.", "(ok)", "[x]", "{y}", "<z>", "co-op", "über",
              "résumé", "naïveté", "façade", "piñata", "smörgåsbord", "jalapeño"]
    for _ in range(50):
        texts.append(" ".join(rng.choice(pieces) for _ in range(rng.randint(1, 25))))
    # Long texts that truncate at 256 tokens.
    base = ("The quarterly report shows revenue growth of 12.5% year-over-year, driven by "
            "strong demand in Asia-Pacific (APAC) markets, while costs rose modestly. ")
    for k in range(1, 9):
        texts.append(base * (4 * k))
    texts.append("我喜欢猫。" * 200)
    texts.append("word " * 300)
    texts.append("Crème brûlée, s'il vous plaît! " * 60)
    texts.append("🙂 " * 400)
    texts.append(" ".join(str(rng.randint(0, 10**9)) for _ in range(200)))
    return texts


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir",
                        default=os.path.join(ROOT, ".cache/models/all-MiniLM-L6-v2"))
    parser.add_argument("--out",
                        default=os.path.join(ROOT, "tests/text/testdata/minilm_reference.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    assert tokenizer.is_fast, "expected the fast (Rust) tokenizer"
    model = AutoModel.from_pretrained(args.model_dir).eval()
    texts = make_texts()
    cases = []
    with torch.no_grad():
        for start in range(0, len(texts), 32):
            batch = texts[start:start + 32]
            enc = tokenizer(batch, padding=True, truncation=True, max_length=MAX_LENGTH,
                            return_tensors="pt")
            out = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(out.dtype)
            pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            emb = torch.nn.functional.normalize(pooled, p=2, dim=1)
            for i, text in enumerate(batch):
                n = int(enc["attention_mask"][i].sum())
                cases.append({
                    "text": text,
                    "ids": enc["input_ids"][i][:n].tolist(),
                    "embedding": [round(float(v), 6) for v in emb[i]],
                })
    doc = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "max_length": MAX_LENGTH,
        "generator": (f"tools/text/make_encoder_reference.py; torch {torch.__version__}, "
                      f"transformers {transformers.__version__}"),
        "cases": cases,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="ascii") as f:
        json.dump(doc, f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(cases)} cases to {args.out}")


if __name__ == "__main__":
    main()
