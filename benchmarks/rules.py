"""Scripted annotators for benchmarks/learning_rules.py: six preferences of different kinds, each a judge.

Each rule is a quality function `quality(prompt, answer) -> float | None` (None: unacceptable) turned into a
preference judge the way an annotator following written guidelines decides: the answer of higher quality wins, equal
quality is a tie, two unacceptable answers are `both_bad`. The guideline text is what a person would be told.

Four rules choose the project's defaults (TUNING_RULES); two are held out and never looked at while choosing them
(HELD_OUT_RULES). The reward model never sees a rule, only the votes it casts; the evaluation judges the tuned policy
with the rule itself, which the policy never optimised against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

STOPWORDS = frozenset("""
a an the of to in on at for from by with about into over under and or but if so as is are was were be been being
do does did done have has had what which who whom whose why how when where that this these those it its it's i me
my we our you your he she they them their his her there here can could should would will shall may might must not
no yes give tell write explain describe suggest recommend make say one two three four five some any many much more
most very just like than then also only own same other such each every all both few simple short long good best
please between difference main someone never stop get thing things way ways
""".split())

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
WORD = re.compile(r"[A-Za-z']+")


def words(text: str) -> list[str]:
    return text.split()


def sentences(text: str) -> list[str]:
    return [s for s in SENTENCE_END.split(text.strip()) if s]


def stem(word: str) -> str:
    """Crude plural folding, enough to match `opossums` with `opossum` and `leaves` with `leave`."""
    word = word.lower().strip("'")
    for suffix in ("ies", "es", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def subject_words(prompt: str) -> set[str]:
    """What the prompt asks about: its content words (not stopwords), stemmed."""
    return {stem(w) for w in WORD.findall(prompt) if w.lower() not in STOPWORDS and len(w) > 2}


# ---------------------------------------------------------------------------------------------------------------------
# Quality functions: higher is better, None is unacceptable
# ---------------------------------------------------------------------------------------------------------------------
def concise(prompt: str, answer: str) -> float | None:
    """Length with a floor: shorter is better, but under 8 words is not an answer."""
    n = len(words(answer))
    return None if n < 8 else -n


def plain_words(prompt: str, answer: str) -> float | None:
    """Style: plain language; the smaller the share of long words (8+ letters), the better."""
    tokens = WORD.findall(answer)
    if len(tokens) < 5:
        return None
    return -round(sum(len(t) >= 8 for t in tokens) / len(tokens), 2)


def names_subject_early(prompt: str, answer: str) -> float | None:
    """Content: the first sentence names what was asked about, and the earlier the better."""
    wanted = subject_words(prompt)
    first = sentences(answer)[:1]
    if not first or not wanted:
        return None
    for index, word in enumerate(WORD.findall(first[0])):
        if stem(word) in wanted:
            return -min(index, 12)  # within the first dozen words, earlier is better; beyond that all alike
    return None


def warm(prompt: str, answer: str) -> float | None:
    """Tone: warm and talking to the reader: each `you`/`your` and each `!` counts, up to 4."""
    if len(words(answer)) < 5:
        return None
    count = len(re.findall(r"\byou(r|rs|'re|'ll)?\b", answer, re.I)) + answer.count("!")
    return float(min(count, 4))


def short_sentences(prompt: str, answer: str) -> float | None:
    """Held out, format: short sentences read easily; lower mean words per sentence is better."""
    parts = sentences(answer)
    if len(words(answer)) < 5 or not parts:
        return None
    return -round(sum(len(words(s)) for s in parts) / len(parts))


def finished(prompt: str, answer: str) -> float | None:
    """Held out, completeness: an answer that ends on a finished sentence beats one cut off mid-sentence; among
    finished ones, the one with more complete sentences wins (more said, nothing left hanging)."""
    if len(words(answer)) < 5:
        return None
    done = answer.rstrip().endswith((".", "!", "?", '"', ")"))
    return (1.0 + min(len(sentences(answer)), 4) / 10) if done else 0.0


@dataclass(frozen=True)
class Rule:
    name: str
    kind: str
    guidelines: str
    quality: Callable[[str, str], float | None]

    def judge(self, prompt: str, a: str, b: str) -> str:
        qa, qb = self.quality(prompt, a), self.quality(prompt, b)
        if qa is None and qb is None:
            return "both_bad"
        if qb is None or (qa is not None and qa > qb):
            return "a"
        if qa is None or qb > qa:
            return "b"
        return "tie"


RULES = {
    rule.name: rule
    for rule in (
        Rule("concise", "length with a floor", "Prefer the shorter answer, but an answer under 8 words is no answer.",
             concise),
        Rule("plain_words", "style", "Prefer plain language: fewer long words.", plain_words),
        Rule("names_subject", "content", "The first sentence must name what was asked about; the earlier, the better.",
             names_subject_early),
        Rule("warm", "tone", "Prefer a warm answer that talks to the reader (you, your, an exclamation).", warm),
        Rule("short_sentences", "format (held out)", "Prefer short sentences.", short_sentences),
        Rule("finished", "completeness (held out)", "Prefer an answer that ends on a finished sentence.", finished),
    )
}
TUNING_RULES = ("concise", "plain_words", "names_subject", "warm")
HELD_OUT_RULES = ("short_sentences", "finished")


def score(rule: Rule, prompts: list[str], tuned: list[str], reference: list[str]) -> dict:
    """Win + tie / 2 for the tuned answers against the reference answers under the rule's judge (0.5: no change)."""
    outcomes = [rule.judge(p, a, b) for p, a, b in zip(prompts, tuned, reference)]
    wins = sum(o == "a" for o in outcomes)
    losses = sum(o == "b" for o in outcomes)
    ties = len(outcomes) - wins - losses
    return {"score": (wins + ties / 2) / len(outcomes), "wins": wins, "ties": ties, "losses": losses}
