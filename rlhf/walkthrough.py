"""The walkthrough: two starter projects that ask the same opossum questions in two contexts.

"An opossum is a marsupial" is the right answer for a biology tutor, "a great character for memes" for a meme bot:
the guidelines are the context, and the same prompts deserve different preferences under each. A first-time
visitor labels one project, trains, and sees the policy move toward that project's guidelines.
"""

from __future__ import annotations

from rlhf.store import Store

PROMPTS = [
    "What is an opossum?",
    "Why do opossums play dead?",
    "Describe an opossum to someone who has never seen one.",
    "Is an opossum a good pet?",
    "What do opossums eat?",
    "Where do opossums live?",
    "Are opossums dangerous?",
    "Tell me something surprising about opossums.",
]

CANDIDATES = 3
"""Answers sampled per prompt: 3 make 3 pairs a prompt, 24 pairs for the 8 prompts (enough for a reward model)."""

PROJECTS = {
    "opossum-tutor": """# Context: a biology tutor for high-school students

The assistant answers a student's question in a biology class.

- Prefer the answer that is **factually correct**: opossums are marsupials native to the Americas.
- Prefer **clear, short explanations** (two or three sentences) over long or rambling ones.
- A joke is fine only if the facts are right. Made-up species names or places are **both bad** material.
""",
    "opossum-memes": """# Context: a meme bot for a wildlife account's social media

The assistant writes replies that people will enjoy and share.

- Prefer the answer that is **funny, playful and short** (one or two sentences).
- Facts matter less than tone, but nothing mean or false about people.
- A dry encyclopedia answer loses to a witty one; two dull answers are **both bad**.
""",
}


def create_walkthrough_projects() -> list[str]:
    """Create (or refresh) the two starter projects with their guidelines; returns their names."""
    for name, guidelines in PROJECTS.items():
        Store.open(name, create=True).save_guidelines(guidelines, author="walkthrough")
    return list(PROJECTS)


STEPS = """### Your first RLHF loop, on the CPU of a free Space

1. **Pick a context.** Create the walkthrough projects below and choose *opossum-tutor* (a biology tutor) or
   *opossum-memes* (a meme bot) in the Project box. Same questions, different guidelines.
2. **Generate.** In the Generate tab, press *Load walkthrough prompts* (it also sets 3 candidates) and Generate:
   the model writes three answers per question, which makes 24 pairs to compare.
3. **Prefer.** In the Prefer tab, type your name, press Enter, and judge the 24 pairs with the keys 1 / 2 / 3 / 4,
   reading the guidelines on the right. Your votes are the training data.
4. **Train a reward model.** In the Train tab, pick *Reward model* and Start: it learns to score answers the way
   you voted (its held-out accuracy tells you how well).
5. **Run PPO.** Pick *PPO*, set Steps to 10 for a quick demo, and Start: watch the score rise and the KL stay
   small; the samples table shows what the policy is learning.
6. **Compare.** In the Chat tab's arena, ask the base model and your new checkpoint the same question and vote.
   Then start the next round from the Train tab's Rounds section.
"""
