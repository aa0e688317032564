import pytest

from digest.taxonomy import CategoryExpression, CategoryExpressionError


@pytest.mark.parametrize("text, include, exclude", [
    ("cs.AI+cs.LG-cs.CY", ("cs.AI", "cs.LG"), ("cs.CY",)),
    ("astro-ph.GA+hep-th-cond-mat.soft", ("astro-ph.GA", "hep-th"), ("cond-mat.soft",)),
    ("math-ph + q-fin.CP", ("math-ph", "q-fin.CP"), ()),
    ("cs-cs.CY", ("cs",), ("cs.CY",)),
])
def test_parse(text, include, exclude):
    expression = CategoryExpression.parse(text)
    assert (expression.include, expression.exclude) == (include, exclude)


def test_union_and_exclusion():
    expression = CategoryExpression.parse("cs.AI+cs.LG-cs.CY")
    assert expression.matches(["cs.LG"])
    assert expression.matches(["stat.ML", "cs.AI"])
    assert not expression.matches(["cs.AI", "cs.CY"])
    assert not expression.matches(["cs.CV"])
    assert CategoryExpression.parse("cs").matches(["cs.CV"])


@pytest.mark.parametrize("text, message", [
    ("cs.XX", "unknown arXiv category 'cs.XX'"),
    ("cs.AI+", "missing a category after '+' in 'cs.AI+'"),
    ("-cs.AI", "'-cs.AI' includes no category"),
    ("", "empty category expression"),
])
def test_errors(text, message):
    with pytest.raises(CategoryExpressionError, match="^" + message.replace("+", r"\+").replace("(", r"\(") + "$"):
        CategoryExpression.parse(text)
