"""The number rules (`havoc_lite.numbers`): literals per grammar, values, matching, normalizing."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from havoc_lite.numbers import (find_literals, find_numbers, normalize_number, normalized_equal,
                                numbers_in, numeric_leaves, parse_number, same_value, states_value)


# --- literals -----------------------------------------------------------------------------------
def test_prime_grammar_reads_model_text():
    text = "sold 1,234.5 apples, -3 pears; 10-5=5; [1,2,3]; x2 12% 3.5e-05 v1.2.3 −7"
    assert find_literals(text, "prime") == [
        "1,234.5", "-3", "10", "5", "5", "1", "2", "3", "12%", "3.5e-05", "−7"]
    assert [n.value for n in find_numbers(text, "prime")][-1] == -7.0   # U+2212 is a minus sign


def test_synth_grammar_reads_leading_dots_and_spaced_percents():
    text = "Tom has 1,234.5 apples, -3 pears, 3-4 figs, p=3.4e-05, 35%, alpha .05, 12 %"
    nums = find_numbers(text, "synth")
    assert [n.value for n in nums] == [1234.5, -3, 3, 4, 3.4e-05, 35, 0.05, 12]
    assert [n.percent for n in nums] == [False] * 5 + [True, False, True]
    assert find_literals(".05 and 35 %", "prime") == ["35"]   # neither ".05" nor the percent


def test_gsm8k_grammar_reads_dollars_and_loose_commas():
    # "$" (and a space after it) and loose commas are part of the literal; a space after a minus
    # is not (a binary minus); normalize_number drops the marks
    found = find_literals("3 boxes, 1,250 pens, so $2,500.50 in all; 1,2; $ 7; 35 - 2", "gsm8k")
    assert found == ["3", "1,250", "$2,500.50", "1,2", "$ 7", "35", "2"]
    assert [normalize_number(s) for s in found] == ["3", "1250", "2500.5", "12", "7", "35", "2"]


def test_parse_number_precision_and_percent():
    assert parse_number("1,234.50") == parse_number("1,234.50")
    n = parse_number("1,234.50")
    assert (n.value, n.half_ulp, n.percent) == (1234.5, 0.005, False)
    assert parse_number("24").half_ulp == 0.5
    assert math.isclose(parse_number("3.4e-05").half_ulp, 5e-07)
    assert math.isclose(parse_number("1.5e3").half_ulp, 50.0)
    assert parse_number("35 %").percent and parse_number("35 %").value == 35.0
    assert parse_number("$12").value == 12.0
    assert parse_number("1e999") is None and parse_number("abc") is None
    assert parse_number("0e999").value == 0.0          # finite, though its last digit is not
    assert find_numbers("big 1e999 small 2", "synth")[0].value == 2.0


# --- values -------------------------------------------------------------------------------------
def test_numbers_in_and_numeric_leaves():
    result = {"a": [1, "x = 3"], "b": True, "c": None, "d": float("inf"), "e": {"f": 2.5}}
    assert numbers_in(result, "prime") == [1.0, 3.0, 2.5]
    assert numeric_leaves(result) == [1.0, 2.5]
    assert numbers_in("p = .05", "synth") == [0.05] and numbers_in("p = .05", "prime") == []


# --- matching -----------------------------------------------------------------------------------
def N(s):
    return parse_number(s)


def test_states_value_exact_and_rounded():
    assert states_value(N("24"), 24.0, rel_tol=1e-9)
    assert states_value(N("0.035"), 0.03466, rel_tol=1e-6)          # rounded to what is written
    assert not states_value(N("0.04"), 0.03466, rel_tol=1e-6)       # |0.04 - 0.03466| > 0.005
    assert states_value(N("34.7%"), 0.3466, rel_tol=1e-6)           # percent as a/100
    assert states_value(N("19"), 19.3, rel_tol=1e-6)                # "19" states 19 ± 0.5 ...
    assert not states_value(N("20"), 19.0, rel_tol=1e-6)


def test_states_value_caller_options():
    # a written 0 is exact by default (synth: "0" never passes for 0.3) ...
    assert not states_value(N("0"), 0.3, rel_tol=1e-6)
    assert not states_value(N("0.00"), 0.003, rel_tol=1e-9)
    # ... PRIME lets two decimals say what they say
    assert states_value(N("0.00"), 0.003, rel_tol=1e-9, zero_is_exact=False)
    # PRIME: a whole number states itself exactly, but may be the value rounded/floored/ceiled
    assert not states_value(N("24"), 23.6, rel_tol=1e-9, whole_is_exact=True)
    assert states_value(N("24"), 23.6, rel_tol=1e-9, whole_is_exact=True, whole_rounding=True)
    assert states_value(N("7"), 6.2, rel_tol=1e-9, whole_is_exact=True, whole_rounding=True)
    assert not states_value(N("8"), 6.2, rel_tol=1e-9, whole_is_exact=True, whole_rounding=True)
    assert not states_value(N("1"), 0.4, rel_tol=1e-9, whole_is_exact=True, whole_rounding=True)


def test_same_value():
    assert same_value(0.1 + 0.2, 0.3) and not same_value(0.3, 0.3001)
    assert same_value(float("nan"), float("nan")) and same_value(0.0, 1e-13)


@pytest.mark.parametrize("text,expected", [
    ("1,200", "1200"), ("$10.0", "10"), ("12.50%", "12.5"), ("-3", "-3"), ("10.", "10"),
    ("0.5000", "0.5"), ("-0.0", "0"), (".5", "0.5"), ("nope", None)])
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


def test_normalized_equal():
    assert normalized_equal("1200", "1200") and not normalized_equal("1200", "1201")
    assert normalized_equal("0.3333333333", "0.33333333333333", rel_tol=1e-6)
    assert not normalized_equal("0.33", "0.3333", rel_tol=1e-6)
    assert not normalized_equal(None, "1") and not normalized_equal("x", "1", rel_tol=0.1)


# --- properties: format a float, read it back ----------------------------------------------------
@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(["prime", "synth"]))
def test_repr_round_trips_exactly(x, grammar):
    nums = find_numbers(f"the result is {x!r}.", grammar)
    assert len(nums) == 1 and nums[0].value == x


# |x| <= 1e4: beyond it, parsing a decimal back to a float can move it by more than the 1e-12
# slack around the written precision (then the relative tolerance is what holds)
@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=-1e4, max_value=1e4), st.integers(0, 6), st.booleans(),
       st.sampled_from(["prime", "synth"]))
def test_formatted_float_states_its_value(x, decimals, commas, grammar):
    text = f"{x:,.{decimals}f}" if commas else f"{x:.{decimals}f}"
    nums = find_numbers(f"x = {text} units", grammar)
    assert len(nums) == 1
    n = nums[0]
    assert math.isclose(n.half_ulp, 0.5 * 10.0 ** -decimals)
    # the written number is x rounded to `decimals` places: it states x at that precision, and
    # nothing more precise (its value is no further than half a unit in its last digit)
    assert states_value(n, x, rel_tol=0.0, zero_is_exact=False)
    assert float(normalize_number(find_literals(f"total: {text}", "gsm8k")[0])) == n.value


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-1e4, max_value=1e4), st.integers(0, 6))
def test_exponent_format_states_its_value(x, digits):
    text = f"{x:.{digits}e}"
    n = find_numbers(text, "synth")[0]
    assert states_value(n, x, rel_tol=0.0, zero_is_exact=False)
