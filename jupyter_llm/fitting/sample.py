"""A few hundred characters from a language model as it stands, for --sample-every's look at a fit's progress."""

from __future__ import annotations

from jupyter_llm.models.generate import generate


def sample_text(corpus, model, tokens: int = 200) -> tuple[str, str]:
    """(prompt, text): from a newline (a char corpus with one) or the corpus's first token; temperature 0.8, seed 0,
    so two samples differ only by what the model learned between them."""
    tok = corpus.tokenizer
    prompt = "\n" if "\n" in getattr(tok, "chars", ()) else tok.decode(corpus.train[:1])
    ids = generate(model, tok.encode(prompt), tokens, temperature=0.8, seed=0)
    return prompt, tok.decode(ids)
