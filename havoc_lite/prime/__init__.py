"""PRIME: budgeted reasoning with tools, adversarial roles and named checks.

    from havoc_lite.prime import generate_with_prime
    result = generate_with_prime(model, tokenizer, "A farmer has 48 eggs and sells half. How many are left?")
    result.answer, result.routing.budget, result.checks.passed

Modules: `router` (budgets), `roles`, `checks`,
`generate` (the loop). The markup itself (tags, `parse`) is `havoc_lite.markup`. A list of prompts is generated in batches grouped by budget.
"""
from .generate import PrimeResult, SectionForcer, generate_with_prime, generate_with_prime_batch
from .roles import ROLE_INSTRUCTIONS, extract_roles, system_prompt
from .router import BUDGET_SECTIONS, FORCED_SECTIONS, ReasoningBudget, RouterConfig, Routing, route
from .checks import CHECK_NAMES, Check, CheckReport, run_checks

__all__ = [
    "BUDGET_SECTIONS", "ReasoningBudget", "CHECK_NAMES", "Check", "FORCED_SECTIONS",
    "PrimeResult", "ROLE_INSTRUCTIONS", "RouterConfig", "Routing", "SectionForcer",
    "CheckReport", "extract_roles",
    "generate_with_prime", "generate_with_prime_batch", "route", "run_checks", "system_prompt",
]
