"""Small builders shared by several test modules."""


def write_arpa(path, unigrams: dict[str, float], bigrams: dict[tuple[str, str], float] = {}):
    """A hand-written ARPA word LM: log10 unigram probabilities (backoff -0.3) and optional bigrams."""
    # KenLM loads nothing below order 2, so there is always a bigram section
    bigrams = {("<s>", "</s>"): -2.0, **bigrams}
    lines = ["\\data\\", f"ngram 1={len(unigrams) + 3}", f"ngram 2={len(bigrams)}", "",
             "\\1-grams:", "-99\t<s>\t-0.3", "-1.0\t</s>", "-5.0\t<unk>"]
    lines += [f"{p}\t{w}\t-0.3" for w, p in unigrams.items()]
    lines += ["", "\\2-grams:"] + [f"{p}\t{a} {b}" for (a, b), p in bigrams.items()]
    lines += ["", "\\end\\", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
