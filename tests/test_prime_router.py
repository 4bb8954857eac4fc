"""PRIME router: a labelled prompt set, recorded reasons, configurable thresholds."""
import pytest

from havoc_lite.prime import BUDGET_SECTIONS, ReasoningBudget, RouterConfig, route

# (prompt, expected budget), written by hand: what a person would give each prompt.
LABELLED = [
    ("Hi there!", "minimal"),
    ("What is the capital of France?", "minimal"),
    ("Who wrote Hamlet?", "minimal"),
    ("Translate 'good morning' into Spanish.", "minimal"),
    ("Name a primary colour.", "minimal"),
    ("Explain why the sky is blue.", "light"),
    ("Why do leaves change colour in autumn?", "light"),
    ("Describe how a bill becomes a law, step by step.", "light"),
    ("Summarize the plot of Romeo and Juliet for a student who has never read it and wants "
     "the main events in order and the reasons the lovers fail.", "light"),
    ("How does a refrigerator keep food cold?", "light"),
    ("What is 48/2?", "medium"),
    ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
     "May. How many clips did Natalia sell altogether in April and May?", "medium"),
    ("Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
     "How much did she earn?", "medium"),
    ("Compute 17 * 23 + 5.", "medium"),
    ("Solve the equation x^2 - 5x + 6 = 0.", "medium"),
    ("What is 15 percent of 240?", "medium"),
    ("Run a t-test on group A = [5.1, 4.9, 5.6] and group B = [6.2, 6.0, 6.4].", "medium"),
    ("Find the derivative of sin(x) * x.", "medium"),
    ("Should we switch our supplier if the new one is 8% cheaper but ships 3 days slower?", "heavy"),
    ("Prove that the square root of 2 is irrational.", "heavy"),
    ("Compare a 2^3 full factorial design with a Plackett-Burman design for screening 7 factors.",
     "heavy"),
    ("Is it better to pay off a 6% loan early or invest at an expected 7% return?", "heavy"),
    ("What are the pros and cons of remote work?", "heavy"),
    ("We ran an experiment with 3 temperatures and 2 catalysts and measured yield in each run. "
     "The operators want to know which effects matter and how to read the results. Plan an "
     "analysis with an ANOVA and a regression on the factorial design, say which interaction "
     "effects to check, what sample size per cell gives useful power, and how to report the "
     "p-value and confidence interval of each main effect to the plant manager.", "heavy"),
]


def test_labelled_prompt_set_accuracy_and_reasons():
    assert len(LABELLED) >= 20
    wrong = []
    for prompt, expected in LABELLED:
        r = route(prompt)
        assert r.reasons and all(isinstance(x, str) and x for x in r.reasons), prompt
        assert r.sections == BUDGET_SECTIONS[r.budget]
        assert r.max_new_tokens == RouterConfig().max_new_tokens[r.budget]
        if r.budget.value != expected:
            wrong.append((prompt[:50], expected, r.budget.value, r.reasons))
    accuracy = 1 - len(wrong) / len(LABELLED)
    assert accuracy >= 0.9, wrong
    # each budget is represented and reached
    assert {e for _, e in LABELLED} == {b.value for b in ReasoningBudget}


def test_reasons_name_the_rule_that_fired():
    heavy = route("Should we buy the cheaper machine?")
    assert heavy.budget is ReasoningBudget.HEAVY and "should we" in heavy.reasons[0]
    assert heavy.features["adversarial"] == ["should we"]
    medium = route("What is 12 + 30?")
    assert medium.budget is ReasoningBudget.MEDIUM
    assert any("arithmetic expression" in r for r in medium.reasons)
    assert medium.tools_enabled and not route("Hello").tools_enabled
    assert route("Hello").reasons[0].startswith("no cue fired")


def test_word_boundaries_in_terms():
    # 'sum' must not fire on 'summer', 'doe' not on 'does', 'times' on 'sometimes'
    r = route("Does summer sometimes feel short?")
    assert r.budget is ReasoningBudget.MINIMAL, r.reasons


def test_thresholds_are_configurable():
    prompt = "Tell me a story about a brave little toaster please"   # 10 words, no cues
    assert route(prompt).budget is ReasoningBudget.MINIMAL
    assert route(prompt, RouterConfig(light_min_words=10)).budget is ReasoningBudget.LIGHT
    numbers = "Apples cost 3 dollars"
    assert route(numbers).budget is ReasoningBudget.MINIMAL          # one number < medium_min_numbers=2
    assert route(numbers, RouterConfig(medium_min_numbers=1)).budget is ReasoningBudget.MEDIUM
    cfg = RouterConfig(max_new_tokens={b: 7 for b in ReasoningBudget})
    assert route("Should we?", cfg).max_new_tokens == 7
    # switching the adversarial rule off: "should we" prompts fall through to the next rule
    off = RouterConfig(heavy_min_cues=99)
    assert route("Should we switch if it is 8% cheaper and 3 days slower?", off).budget is ReasoningBudget.MEDIUM


def test_bad_input():
    with pytest.raises(TypeError, match="string"):
        route(["not", "a", "string"])
    with pytest.raises(ValueError, match="unknown budget"):
        ReasoningBudget.parse("enormous")
    assert ReasoningBudget.parse("HEAVY") is ReasoningBudget.HEAVY


def test_heldout_router_accuracy_meets_the_documented_threshold():
    """The held-out set (havoc_lite/assets/router_heldout.jsonl) shares no prompt with LABELLED
    above (the prompts the rules were written against). Measured: 0.825 (33/40); README states
    >= 0.75 as the bar. Its misses are reported, not tuned away."""
    import json
    from havoc_lite.prime.router import HELDOUT_PROMPTS, evaluate_router
    rows = [json.loads(line) for line in open(HELDOUT_PROMPTS, encoding="utf-8")]
    held = evaluate_router()
    tuned = evaluate_router([{"prompt": p, "budget": b} for p, b in LABELLED])
    assert held["n"] == 40 and set(held["per_budget"]) == {"minimal", "light", "medium", "heavy"}
    assert len({r["prompt"] for r in rows}) == 40 and not {r["prompt"] for r in rows} & {p for p, _ in LABELLED}
    assert tuned["accuracy"] == 1.0
    assert held["accuracy"] >= 0.75, held["mistakes"]
    assert sum(held["confusion"].values()) == 40 and len(held["mistakes"]) == round(40 * (1 - held["accuracy"]))
