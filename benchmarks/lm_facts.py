"""Which training documents taught a language model a fact? Planted facts in a synthetic
corpus, GPT-2-style models trained here, recall@k of the planted documents.

The corpus (word-level, seeded): background documents stating random relations between
random entities with filler words; per planted fact `subject relation object` a few
documents (different frequencies) that state it in one of several paraphrases, each with
its own filler; distractor documents that share the fact's subject or object but not the
fact (including the subject and object in another relation). The query is the prompt
`subject relation` with the completion `object` (only the completion is scored). A planted
document is one that states the fact; recall@k is the share of them (at most k) among a
method's top-k training documents, averaged over facts.

Methods, on the same model in the same run: ours at defaults (`method="auto"`), BM25 over
the text (query: the prompt and the completion), raw gradient similarity (the dot product
of the completion's and each document's loss gradients, all parameters), and Kronfluence
EK-FAC at its defaults (GPT-2's Conv1D layers converted to the equal nn.Linear layers,
which Kronfluence tracks). Per method: recall@1/10, fit, query and self-influence time and
the process's peak RSS so far (methods run in this order: ours first).

    OMP_NUM_THREADS=1 python benchmarks/lm_facts.py [--sizes small,large] [--seeds 0,1,2]
        [--no-write]

Kronfluence must be importable (benchmarks/peers/setup.sh, or `pip install --no-deps
kronfluence einops einconv opt_einsum` into a folder on PYTHONPATH); without it its rows say so.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import influence as inf  # noqa: E402
from _results import append_section, markdown_table  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
LENGTH = 16
SIZES = {"small": dict(n_embd=64, n_layer=2, n_head=4),
         "large": dict(n_embd=128, n_layer=3, n_head=4)}
TEMPLATES = ["{s} {r} {o}", "{a} {s} {r} {o} {b}", "{a} {b} {s} {r} {o}", "{s} {r} {o} {a} {b} {c}",
             "{a} said that {s} {r} {o}", "we know {s} {r} {o} {a}"]
RELATIONS = ["lives in", "works for", "was born in", "plays for", "studies at"]


@dataclass
class Corpus:
    docs: list[list[str]]
    facts: list[dict]  # prompt words, answer word, planted doc indices
    words: list[str]


def _name(gen: torch.Generator, syllables: list[str]) -> str:
    return "".join(syllables[int(i)] for i in torch.randint(0, len(syllables), (3,), generator=gen))


def make_corpus(seed: int, n_docs: int, frequencies: tuple[int, ...]) -> Corpus:
    """Background, planted and distractor documents (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    pick = lambda seq: seq[int(torch.randint(0, len(seq), (1,), generator=gen))]
    syl = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "da", "fe"]
    entities = sorted({_name(gen, syl) for _ in range(260)})
    places = sorted({_name(gen, syl[::-1]) + "ia" for _ in range(80)})
    filler = ["the", "a", "today", "again", "often", "really", "maybe", "indeed", "also", "then",
              "here", "now"]
    fill = lambda: {k: pick(filler) for k in "abc"}
    facts, docs = [], []
    for f, count in enumerate(frequencies):
        s, r, o = entities[f], RELATIONS[f % len(RELATIONS)], places[f]
        planted = []
        for _ in range(count):
            planted.append(len(docs))
            docs.append(pick(TEMPLATES).format(s=s, r=r, o=o, **fill()).split())
        others = RELATIONS[:f % 5] + RELATIONS[f % 5 + 1:]
        other_places, other_entities = places[len(frequencies):], entities[len(frequencies):]
        for _ in range(2):  # distractors: the subject with another object, another subject with
            # the object, and both in another relation (the query's rare words, not the fact)
            docs.append(pick(TEMPLATES).format(s=s, r=pick(others), o=pick(other_places),
                                               **fill()).split())
            docs.append(pick(TEMPLATES).format(s=pick(other_entities), r=r, o=o,
                                               **fill()).split())
            docs.append(pick(TEMPLATES).format(s=s, r=pick(others), o=o, **fill()).split())
        facts.append({"prompt": f"{s} {r}".split(), "answer": o, "planted": planted})
    while len(docs) < n_docs:
        docs.append(pick(TEMPLATES).format(s=pick(entities[len(frequencies):]), r=pick(RELATIONS),
                                           o=pick(places[len(frequencies):]), **fill()).split())
    order = torch.randperm(len(docs), generator=gen).tolist()
    where = {old: new for new, old in enumerate(order)}
    for fact in facts:
        fact["planted"] = sorted(where[i] for i in fact["planted"])
    words = ["<pad>", *sorted({w for d in docs for w in d})]
    return Corpus([docs[i] for i in order], facts, words)


def encode(corpus: Corpus, texts: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
    index = {w: i for i, w in enumerate(corpus.words)}
    ids = torch.zeros(len(texts), LENGTH, dtype=torch.long)
    for row, text in enumerate(texts):
        ids[row, :len(text)] = torch.tensor([index[w] for w in text[:LENGTH]])
    return ids, (ids != 0).long()


def train_model(corpus: Corpus, size: str, epochs: int, seed: int):
    import transformers

    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=len(corpus.words), n_positions=LENGTH,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **SIZES[size])
    model = transformers.GPT2LMHeadModel(config)
    ids, mask = encode(corpus, corpus.docs)
    labels = inf.token_labels(ids, mask)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    steps = epochs * math.ceil(len(ids) / 32)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 3e-3, total_steps=steps,
                                                   pct_start=0.1)
    model.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(ids)).split(32):
            loss = model(input_ids=ids[rows], attention_mask=mask[rows], labels=labels[rows]).loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    return model.eval()


def queries(corpus: Corpus) -> dict:
    texts = [f["prompt"] + [f["answer"]] for f in corpus.facts]
    ids, mask = encode(corpus, texts)
    prompts = torch.tensor([len(f["prompt"]) for f in corpus.facts])
    labels = inf.token_labels(ids, mask, prompt_length=prompts)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def completion_accuracy(model, corpus: Corpus) -> float:
    q = queries(corpus)
    with torch.no_grad():
        logits = model(input_ids=q["input_ids"], attention_mask=q["attention_mask"]).logits
    at = torch.tensor([len(f["prompt"]) - 1 for f in corpus.facts])
    guess = logits[torch.arange(len(at)), at].argmax(-1)
    return float((guess == q["input_ids"][torch.arange(len(at)), at + 1]).float().mean())


def recall(scores: torch.Tensor, corpus: Corpus, k: int) -> float:
    top = scores.topk(k, dim=1).indices
    hits = [len(set(top[j].tolist()) & set(f["planted"])) / min(k, len(f["planted"]))
            for j, f in enumerate(corpus.facts)]
    return sum(hits) / len(hits)


def bm25(corpus: Corpus, k1: float = 1.5, b: float = 0.75) -> torch.Tensor:
    """Okapi BM25 of every document for each fact's prompt + completion words: [n_facts, n_docs]."""
    n, avg = len(corpus.docs), sum(len(d) for d in corpus.docs) / len(corpus.docs)
    df = Counter(w for d in corpus.docs for w in set(d))
    counts = [Counter(d) for d in corpus.docs]
    out = torch.zeros(len(corpus.facts), n)
    for j, fact in enumerate(corpus.facts):
        for w in fact["prompt"] + [fact["answer"]]:
            idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
            for i, c in enumerate(counts):
                if c[w]:
                    norm = k1 * (1 - b + b * len(corpus.docs[i]) / avg)
                    out[j, i] += idf * c[w] * (k1 + 1) / (c[w] + norm)
    return out


def gradient_similarity(model, train: dict, test: dict) -> torch.Tensor:
    """Raw gradient dot products ∇ℓ(query)ᵀ ∇ℓ(doc) over all parameters, streamed: [n_q, n]."""
    task = inf.LanguageModelingTask()
    params = [p for p in model.parameters() if p.requires_grad]

    def grad(batch, i):
        out = model(**{k: v[i:i + 1] for k, v in batch.items() if k != "labels"}).logits
        g = torch.autograd.grad(task.loss(out, batch["labels"][i:i + 1]).sum(), params)
        return torch.cat([x.reshape(-1) for x in g])

    Q = torch.stack([grad(test, j) for j in range(len(test["labels"]))])
    return torch.stack([Q @ grad(train, i) for i in range(len(train["labels"]))], dim=1)


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_ours(model, train: dict, test: dict, corpus: Corpus) -> dict:
    t0 = time.perf_counter()
    attr = inf.Attributor(model, train, task=inf.LanguageModelingTask(), label_column="labels",
                          progress=False).fit()
    t1 = time.perf_counter()
    scores = attr.scores(test)
    t2 = time.perf_counter()
    attr.self_influence()
    t3 = time.perf_counter()
    d = attr.diagnostics
    share = answer_token_share(attr, test, corpus)
    return {"scores": scores, "fit": t1 - t0, "query": t2 - t1, "self": t3 - t2,
            "note": f"{d['method']}, {d['feature_dim']:,} features; token_scores: the answer token "
                    f"carries {share:.2f} of a planted document's absolute influence"}


def answer_token_share(attr, test: dict, corpus: Corpus) -> float:
    """Per-token answers (`inf.token_scores`), checked: the mean share of a planted document's
    absolute token influence on its fact's completion that sits on the answer token."""
    shares = []
    for j, fact in enumerate(corpus.facts):
        query = {k: v[j:j + 1] for k, v in test.items()}
        tokens = inf.token_scores(attr, query, fact["planted"])[0].abs()  # [planted, L]
        for r, i in enumerate(fact["planted"]):
            at = corpus.docs[i].index(fact["answer"])
            shares.append(float(tokens[r, at] / tokens[r].sum()))
    return sum(shares) / len(shares)


def _linear_copy(model):
    """A copy with transformers' Conv1D layers as the equal nn.Linear (W transposed)."""
    import copy

    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if type(module).__name__ == "Conv1D":
            linear = torch.nn.Linear(module.weight.shape[0], module.weight.shape[1])
            linear.weight.data = module.weight.data.T.contiguous()
            linear.bias.data = module.bias.data.clone()
            parent = model.get_submodule(name.rsplit(".", 1)[0])
            setattr(parent, name.rsplit(".", 1)[1], linear)
    return model


def run_kronfluence(model, train: dict, test: dict) -> dict:
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments
    from kronfluence.task import Task

    lm = inf.LanguageModelingTask()

    class LMTask(Task):
        def compute_train_loss(self, batch, model, sample=False):
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            labels = batch["labels"]
            if sample:
                with torch.no_grad():
                    probs = torch.softmax(out.detach().reshape(-1, out.shape[-1]), -1)
                    drawn = torch.multinomial(probs, 1).view(labels.shape)  # for position t + 1
                    labels = torch.where(labels == -100, labels, torch.roll(drawn, 1, 1))
            return lm.loss(out, labels).sum()

        def compute_measurement(self, batch, model):
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            return lm.loss(out, batch["labels"]).sum()

        def get_attention_mask(self, batch):
            return batch["attention_mask"]

    rows = lambda d: [{k: v[i] for k, v in d.items()} for i in range(len(d["labels"]))]
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        net = prepare_model(_linear_copy(model), LMTask())
        analyzer = Analyzer("lm_facts", net, LMTask(), cpu=True, disable_tqdm=True,
                            output_dir=folder, log_level=logging.WARNING)
        analyzer.fit_all_factors("f", rows(train), per_device_batch_size=64,
                                 factor_args=FactorArguments(), overwrite_output_dir=True)
        t1 = time.perf_counter()
        analyzer.compute_pairwise_scores("s", "f", rows(test), rows(train),
                                         per_device_query_batch_size=16,
                                         per_device_train_batch_size=64, overwrite_output_dir=True)
        scores = analyzer.load_pairwise_scores("s")["all_modules"].float()
        t2 = time.perf_counter()
        analyzer.compute_self_scores("self", "f", rows(train), per_device_train_batch_size=64,
                                     overwrite_output_dir=True)
        t3 = time.perf_counter()
    return {"scores": scores, "fit": t1 - t0, "query": t2 - t1, "self": t3 - t2,
            "note": "library defaults"}


def timed(fn, *args) -> dict:
    t0 = time.perf_counter()
    scores = fn(*args)
    return {"scores": scores, "fit": 0.0, "query": time.perf_counter() - t0, "self": float("nan"),
            "note": ""}


def evaluate(size: str, seed: int, args) -> list[list]:
    corpus = make_corpus(seed, args.docs, tuple(args.frequencies))
    t0 = time.perf_counter()
    model = train_model(corpus, size, args.epochs, seed)
    ids, mask = encode(corpus, corpus.docs)
    train = {"input_ids": ids, "attention_mask": mask, "labels": inf.token_labels(ids, mask)}
    test = queries(corpus)
    p = sum(x.numel() for x in model.parameters())
    print(f"[{size}] p = {p:,}, {len(corpus.docs)} docs, vocabulary {len(corpus.words)}, trained "
          f"in {time.perf_counter() - t0:.0f} s, completes "
          f"{completion_accuracy(model, corpus):.2f} of the facts")
    runs = {"ours:default": lambda: run_ours(model, train, test, corpus),
            "BM25": lambda: timed(bm25, corpus),
            "gradient dot": lambda: timed(gradient_similarity, model, train, test)}
    if not args.no_kronfluence:
        runs["Kronfluence:EK-FAC"] = lambda: run_kronfluence(model, train, test)
    rows = []
    for name, run in runs.items():
        try:
            r = run()
        except ImportError as error:
            rows.append([size, seed, name, "—", "—", "—", "—", "—", "—", f"not run: {error}"])
            continue
        rows.append([f"{size} (p={p / 1e6:.2f} M)", seed, name,
                     f"{recall(r['scores'], corpus, 1):.2f}",
                     f"{recall(r['scores'], corpus, 10):.2f}", f"{r['fit']:.1f}",
                     f"{r['query']:.1f}",
                     f"{r['self']:.1f}", f"{peak_gb():.2f}", r["note"]])
        print(" | ".join(str(c) for c in rows[-1]))
    return rows


def seed_means(rows: list[list]) -> list[list]:
    """Per model and method, recall@1 and @10 averaged over the corpus seeds."""
    groups: dict[tuple, list] = {}
    for row in rows:
        if row[3] != "—":
            size = row[0].split(" (")[0]  # p differs a little between seeds (the vocabulary)
            groups.setdefault((size, row[2]), []).append((float(row[3]), float(row[4])))
    return [[model, method, len(v), f"{sum(a for a, _ in v) / len(v):.3f}",
             f"{sum(b for _, b in v) / len(v):.3f}"] for (model, method), v in groups.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="small,large")
    parser.add_argument("--docs", type=int, default=1200)
    parser.add_argument("--frequencies", type=int, nargs="+", default=[2, 3, 4, 5, 6, 8, 10, 12])
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--seeds", default="0", help="corpus and training seeds, e.g. 0,1,2")
    parser.add_argument("--no-kronfluence", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    header = ["model", "seed", "method", "recall@1", "recall@10", "fit (s)", "query (s)",
              "self-inf. (s)", "peak RSS so far (GB)", "note"]
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = [row for size in args.sizes.split(",") for seed in seeds
            for row in evaluate(size, seed, args)]
    table = markdown_table(header, rows)
    if len(seeds) > 1:
        means = ["model", "method", "seeds", "mean recall@1", "mean recall@10"]
        table += ["", *markdown_table(means, seed_means(rows))]
    print("\n".join(table))
    if not args.no_write:
        append_section(f"lm_facts: planted facts, {args.docs} documents, frequencies "
                       f"{args.frequencies}, "
                       f"{args.epochs} epochs", table)


if __name__ == "__main__":
    main()
