"""arXiv's category codes, so that a typo in a category expression is caught at config load.

From arXiv's published category taxonomy. An archive name alone (``cs``, ``math``) is accepted too:
the feed and the API both take it.
"""

import difflib
import re

ARCHIVES = frozenset(
    "astro-ph cond-mat cs econ eess gr-qc hep-ex hep-lat hep-ph hep-th math math-ph nlin nucl-ex nucl-th "
    "physics q-bio q-fin quant-ph stat".split()
)

CATEGORIES = frozenset(
    """
    astro-ph.CO astro-ph.EP astro-ph.GA astro-ph.HE astro-ph.IM astro-ph.SR
    cond-mat.dis-nn cond-mat.mes-hall cond-mat.mtrl-sci cond-mat.other cond-mat.quant-gas cond-mat.soft
    cond-mat.stat-mech cond-mat.str-el cond-mat.supr-con
    cs.AI cs.AR cs.CC cs.CE cs.CG cs.CL cs.CR cs.CV cs.CY cs.DB cs.DC cs.DL cs.DM cs.DS cs.ET cs.FL cs.GL
    cs.GR cs.GT cs.HC cs.IR cs.IT cs.LG cs.LO cs.MA cs.MM cs.MS cs.NA cs.NE cs.NI cs.OH cs.OS cs.PF cs.PL
    cs.RO cs.SC cs.SD cs.SE cs.SI cs.SY
    econ.EM econ.GN econ.TH
    eess.AS eess.IV eess.SP eess.SY
    gr-qc hep-ex hep-lat hep-ph hep-th math-ph nucl-ex nucl-th quant-ph
    math.AC math.AG math.AP math.AT math.CA math.CO math.CT math.CV math.DG math.DS math.FA math.GM math.GN
    math.GR math.GT math.HO math.IT math.KT math.LO math.MG math.MP math.NA math.NT math.OA math.OC math.PR
    math.QA math.RA math.RT math.SG math.SP math.ST
    nlin.AO nlin.CD nlin.CG nlin.PS nlin.SI
    physics.acc-ph physics.ao-ph physics.app-ph physics.atm-clus physics.atom-ph physics.bio-ph
    physics.chem-ph physics.class-ph physics.comp-ph physics.data-an physics.ed-ph physics.flu-dyn
    physics.gen-ph physics.geo-ph physics.hist-ph physics.ins-det physics.med-ph physics.optics
    physics.plasm-ph physics.pop-ph physics.soc-ph physics.space-ph
    q-bio.BM q-bio.CB q-bio.GN q-bio.MN q-bio.NC q-bio.OT q-bio.PE q-bio.QM q-bio.SC q-bio.TO
    q-fin.CP q-fin.EC q-fin.GN q-fin.MF q-fin.PM q-fin.PR q-fin.RM q-fin.ST q-fin.TR
    stat.AP stat.CO stat.ME stat.ML stat.OT stat.TH
    """.split()
)


def is_known(code: str) -> bool:
    return code in CATEGORIES or code in ARCHIVES


class CategoryExpressionError(ValueError):
    pass


class CategoryExpression:
    """Cool Papers' expression syntax: ``cs.AI+cs.LG-cs.CY`` is cs.AI or cs.LG, unless also cs.CY.

    ``+`` adds a category, ``-`` excludes one; the first term is always added. An archive name
    (``cs``) matches every category in it.
    """

    def __init__(self, include: tuple[str, ...], exclude: tuple[str, ...]):
        self.include = include
        self.exclude = exclude

    @classmethod
    def parse(cls, text: str) -> "CategoryExpression":
        source = "".join(text.split())
        if not source:
            raise CategoryExpressionError("empty category expression")
        include: list[str] = []
        exclude: list[str] = []
        position = 0
        while position < len(source):
            sign = "+"
            if source[position] in "+-":
                sign, position = source[position], position + 1
            code = _longest_code_at(source, position)
            if code is None:
                word = re.match(r"[^+]*?(?=[+-]|$)", source[position:]).group(0) or source[position:]
                if not word:
                    raise CategoryExpressionError(f"missing a category after {sign!r} in {source!r}")
                raise CategoryExpressionError(f"unknown arXiv category {word!r}{_did_you_mean(word)}")
            (include if sign == "+" else exclude).append(code)
            position += len(code)
        if not include:
            raise CategoryExpressionError(f"{source!r} includes no category")
        return cls(tuple(dict.fromkeys(include)), tuple(dict.fromkeys(exclude)))

    def matches(self, categories) -> bool:
        cats = list(categories)
        return any(_covers(code, c) for code in self.include for c in cats) and not any(
            _covers(code, c) for code in self.exclude for c in cats
        )

    def __str__(self) -> str:
        return "+".join(self.include) + "".join("-" + code for code in self.exclude)

    def __eq__(self, other) -> bool:
        return isinstance(other, CategoryExpression) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __repr__(self) -> str:
        return f"CategoryExpression({str(self)!r})"


def _longest_code_at(source: str, position: int) -> str | None:
    """Codes contain '-' (``astro-ph.GA``), so the longest known code that ends at '+', '-' or the end wins."""
    for code in _CODES_LONGEST_FIRST:
        end = position + len(code)
        if source.startswith(code, position) and (end == len(source) or source[end] in "+-"):
            return code
    return None


_CODES_LONGEST_FIRST = sorted(CATEGORIES | ARCHIVES, key=len, reverse=True)


def _did_you_mean(word: str) -> str:
    """``; did you mean cs.LG?`` for ``cs.lg`` or ``cs.LGG``: the nearest code regardless of case, and
    only a close one (codes are short: at 0.8, ``cs.XY`` is as near cs.SY as cs.CY)."""
    lowered = {code.lower(): code for code in sorted(CATEGORIES | ARCHIVES)}
    near = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.85)
    return f"; did you mean {lowered[near[0]]}?" if near else ""


def _covers(code: str, category: str) -> bool:
    return category == code or (code in ARCHIVES and category.startswith(code + "."))
