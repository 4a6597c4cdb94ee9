#!/usr/bin/env python3
"""The PyTorch reference for tools/text/bench_encoder.cc: the same texts, batch and thread
count through Hugging Face transformers (AutoModel, mean pooling over the attention mask, L2
normalisation, truncation at 256), printing the same JSON fields.

  /usr/bin/python3 tools/text/bench_encoder_torch.py --model-dir DIR --in profiles.tsv
      [--texts 1000] [--batch 64] [--threads 1]

Needs torch and transformers (Debian python3-torch; pip install --user transformers==4.40.2),
as tools/text/make_encoder_reference.py does. Texts are encoded in input order, like Choir's.
"""
import argparse
import json
import os
import platform
import resource
import sys
import time


def _threads_from_argv():
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "1"


# Debian's torch runs its matrix products in the system BLAS (OpenBLAS), whose thread pool
# torch.set_num_threads does not control: fix both before torch loads.
os.environ["OPENBLAS_NUM_THREADS"] = _threads_from_argv()
os.environ["OMP_NUM_THREADS"] = _threads_from_argv()

import torch  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402


def read_texts(path, n):
    texts, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if "\t" not in line:
                continue
            text = line.split("\t", 1)[1]
            if text in seen:
                continue
            seen.add(text)
            texts.append(text)
            if len(texts) == n:
                break
    return texts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--in", dest="inp", required=True)
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    texts = read_texts(args.inp, args.texts)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModel.from_pretrained(args.model_dir).eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(texts), args.batch):
            enc = tokenizer(texts[lo:lo + args.batch], padding=True, truncation=True, max_length=256,
                            return_tensors="pt")
            out = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(out.dtype)
            emb = (out * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            torch.nn.functional.normalize(emb, p=2, dim=1)
    seconds = time.perf_counter() - start
    print(json.dumps({
        "bench": "encoder", "impl": f"pytorch {torch.__version__}", "texts": len(texts), "batch": args.batch,
        "threads": args.threads, "seconds": seconds, "sentences_per_s": len(texts) / seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "cpu": platform.processor() or platform.machine(),
    }))


if __name__ == "__main__":
    main()
