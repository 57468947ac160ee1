"""Tests of seqtools.errors: the error mode, creation sites, wrapped failures."""

import pytest
from conftest import passthrough_errors

import seqtools
from seqtools import EvaluationError, errors


def test_seterr_roundtrip():
    assert seqtools.seterr() == "wrap"
    assert seqtools.seterr("passthrough") == "wrap"
    assert seqtools.seterr("wrap") == "passthrough"
    with pytest.raises(ValueError, match="expected one of"):
        seqtools.seterr("ignore")


def test_seterr_none_keeps_the_mode():
    assert seqtools.seterr(None) == "wrap"
    assert not errors.passthrough()
    old = seqtools.seterr("passthrough")
    try:
        assert errors.passthrough()
        assert seqtools.seterr(None) == "passthrough"
    finally:
        seqtools.seterr(old)


def test_creation_site_is_the_first_frame_outside_the_package():
    view = seqtools.smap(str, [1, 2])  # built here: its origin names this line
    assert view._origin.startswith(__file__ + ":")
    assert errors.creation_site(10**6) == "<unknown>"  # deeper than the stack


class Source:
    _origin = "somewhere.py:12"


def test_raise_evaluation_error_wraps_names_and_chains():
    exc = KeyError("k")
    with pytest.raises(EvaluationError) as info:
        try:
            raise exc
        except KeyError as e:
            errors.raise_evaluation_error(Source(), 7, e)
    message = str(info.value)
    assert "item 7 of Source created at somewhere.py:12" in message
    assert "KeyError" in message and info.value.__cause__ is exc


def test_raise_evaluation_error_passes_inner_errors_and_passthrough():
    inner = EvaluationError("inner")
    with pytest.raises(EvaluationError) as info:
        errors.raise_evaluation_error(Source(), 0, inner)
    assert info.value is inner  # the innermost failure is reported once
    with passthrough_errors(), pytest.raises(ZeroDivisionError):
        errors.raise_evaluation_error(Source(), 0, ZeroDivisionError("x"))


def test_a_view_without_an_origin_is_reported_as_unknown():
    with pytest.raises(EvaluationError, match="created at <unknown>"):
        errors.raise_evaluation_error(object(), 3, ValueError("v"))
